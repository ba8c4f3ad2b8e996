"""Run the DeepAf node graph without launch_ros: each node of `deepaf.graph.GRAPH` in its own
process, with the same names, namespace, parameters and environment as `launch/scan.launch.py`.

`GraphRunner` is what `./deepaf scan` and `./deepaf graph` use; `NodeProcess` (one node in a
child process, stopped with SIGINT so its own shutdown runs) is also what the tests use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from deepaf.environment import node_environment
from deepaf.graph import GRAPH, NodeSpec, default_params_file, ros_arguments


class NodeProcess:
    """A node running in a child process; use as a context manager.

    Args:
        command: argv after the interpreter, e.g. `["-m", "deepaf_driver.stage_node"]`, or a
            full argv whose first element is an executable (then `python=False`).
        ros_args: arguments after `--ros-args` (parameters, remaps).
        python: run `command` with this interpreter (default True).
        env: extra environment variables.
        log_path: file for the node's output (default: a temporary file).
    """

    def __init__(
        self,
        command: Sequence[str],
        ros_args: Sequence[str] = (),
        *,
        python: bool = True,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        argv = [sys.executable, *command] if python else list(command)
        if ros_args:
            argv += ["--ros-args", *ros_args]
        self.argv = argv
        self._env = node_environment({**os.environ, **(env or {})})
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        else:
            self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop())
                prefix="deepaf-node-", suffix=".log", delete=False
            )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Path of the file holding the node's stdout and stderr."""
        return Path(self._log.name)

    def output(self) -> str:
        """Return what the node printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def start(self) -> NodeProcess:
        """Start the process."""
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
        )
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the process [bytes] (0 when not running or unreadable)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop with SIGINT (then SIGKILL after `timeout`); return the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_node_params(
    files: Sequence[str],
    names: Sequence[str],
    overrides: Mapping[str, object],
    node_overrides: Mapping[str, Mapping[str, object]],
    path: Path | None = None,
) -> Path:
    """Merge parameter files and overrides into one file keyed `/**/NODE` per node.

    rclpy does not merge a `-p` rule with a parameter file that has an entry for the node (the
    file's entry wins), so the runner passes everything in one file: for each node, the
    `/**` and `/**/NODE` (or `NODE`) entries of the files in order, then `overrides`, then
    `node_overrides[NODE]`.
    """
    import yaml

    loaded = [yaml.safe_load(Path(f).read_text()) or {} for f in files]
    merged: dict[str, dict] = {}
    for name in names:
        params: dict[str, object] = {}
        for content in loaded:
            for key in ("/**", name, f"/**/{name}"):
                params.update((content.get(key) or {}).get("ros__parameters", {}))
        params.update(overrides)
        params.update(node_overrides.get(name, {}))
        merged[f"/**/{name}"] = {"ros__parameters": params}
    if path is None:
        fd, tmp = tempfile.mkstemp(prefix="deepaf-params-", suffix=".yaml")
        os.close(fd)
        path = Path(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged, sort_keys=True))
    return path


class GraphRunner:
    """The graph's nodes as child processes; use as a context manager.

    Args:
        namespace: namespace of every node.
        params_files: parameter YAML files (default: config/deepaf.yaml).
        overrides: parameters set on every node (`-p` after the files), e.g. profile.
        node_overrides: per node name, extra parameters.
        log_dir: where each node's log goes (default: temporary files).
        nodes: which node names to run (default: all of GRAPH).
    """

    def __init__(
        self,
        namespace: str = "microscope",
        params_files: Sequence[str] | None = None,
        overrides: Mapping[str, object] | None = None,
        node_overrides: Mapping[str, Mapping[str, object]] | None = None,
        log_dir: Path | None = None,
        nodes: Sequence[str] | None = None,
        log_level: str = "info",
    ) -> None:
        files = list(params_files or [default_params_file()])
        self.specs: list[NodeSpec] = [s for s in GRAPH if nodes is None or s.name in nodes]
        self.params_file = write_node_params(
            files,
            [s.name for s in self.specs],
            overrides or {},
            node_overrides or {},
            None if log_dir is None else Path(log_dir) / "params.yaml",
        )
        self.processes: dict[str, NodeProcess] = {}
        for spec in self.specs:
            args = ros_arguments(spec, namespace, [str(self.params_file)], {}, log_level)[1:]
            self.processes[spec.name] = NodeProcess(
                ["-m", spec.module],
                args,
                log_path=None if log_dir is None else Path(log_dir) / f"{spec.name}.log",
            )

    def start(self) -> GraphRunner:
        """Start every node."""
        for proc in self.processes.values():
            proc.start()
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the node processes now (0 where it cannot be read)."""
        return sum(proc.rss_bytes() for proc in self.processes.values())

    def dead(self) -> list[str]:
        """Names of nodes whose process has exited."""
        return [name for name, proc in self.processes.items() if not proc.alive()]

    def stop(self) -> dict[str, int | None]:
        """Stop every node (reverse order); return their exit codes."""
        return {name: proc.stop() for name, proc in reversed(self.processes.items())}

    def __enter__(self) -> GraphRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
