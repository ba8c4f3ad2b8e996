"""Fuzz the running graph: generated bad goals, requests, messages and faults at every action,
service and topic a caller can reach, over real DDS.

After each input: every node is still alive and the input got an answer in time (a clear
refusal, or a safe success; never silence); after every few, good requests are still served.
Throughout: no joint state leaves the stage's soft limits, and nothing is written outside the
scan's output directory. The inputs come from a seeded generator (FUZZ_SEED), so a failure
names the case that reproduces it.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from deepaf.client import DeepAfClient, Outcome, Status
from deepaf.runner import GraphRunner

pytestmark = pytest.mark.ros

FUZZ_SEED = int(os.environ.get("DEEPAF_FUZZ_SEED", "2026"))
N_CASES = 48
CAMERA = {"capture_width": 1014, "capture_height": 760, "preview_width": 320, "preview_height": 180}
# answers a clear error or a safe success; TIMED_OUT / UNAVAILABLE mean a hang or a dead server
ANSWERED = (Status.SUCCEEDED, Status.FAILED, Status.REJECTED)
NASTY = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e308, -1e308, 5e-324, -5e-324, 1e12]


def _tree(root: Path, skip: Path) -> set[str]:
    """Every file and folder under `root`, except inside `skip`."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        out.update(str(here / n) for n in dirnames + filenames)
    return out


class Fuzzer:
    """Builds the cases: (name, call returning an Outcome or None for fire-and-forget)."""

    def __init__(self, client: DeepAfClient, ns: str, out: Path, rng: random.Random) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from trajectory_msgs.msg import JointTrajectory

        self.c, self.ns, self.out, self.rng = client, ns, out, rng
        node = client.node
        self.traj = node.create_publisher(JointTrajectory, f"{ns}/stage/joint_trajectory", 10)
        self.images = node.create_publisher(
            Image, f"{ns}/camera/image_raw", qos_profile_sensor_data
        )

    def nasty(self) -> float:
        return self.rng.choice(NASTY)

    # -- actions ---------------------------------------------------------------------------
    def move(self) -> tuple[str, Callable[[], Outcome | None]]:
        from deepaf_msgs.action import MoveStage

        goal = MoveStage.Goal(relative=self.rng.random() < 0.5)
        kind = self.rng.choice(["axis", "axis", "speed", "outside"])
        if kind == "axis":
            setattr(goal, self.rng.choice("xyz"), self.nasty())
        elif kind == "speed":
            goal.z = 1e-6 if goal.relative else MoveStage.Goal.UNCHANGED
            goal.speed_scale = self.rng.choice([-1.0, 5e-324, 1e-4, 2.0, math.nan, math.inf])
        else:  # just past a soft limit, absolute or by a relative step
            axis = self.rng.choice("xyz")
            goal.relative = False
            setattr(goal, axis, self.rng.choice([-1e-9, 0.0151, -0.000501, 0.000501, -0.02]))
            if axis != "z" and getattr(goal, axis) in (-0.000501, 0.000501):
                setattr(goal, axis, -1e-6)
        text = f"MoveStage x={goal.x:g} y={goal.y:g} z={goal.z:g} rel={goal.relative} "
        text += f"speed={goal.speed_scale:g}"
        return text, lambda: self.c.run_goal("move", goal, timeout=30.0)

    def predict(self) -> tuple[str, Callable[[], Outcome | None]]:
        from deepaf_msgs.action import PredictFocus

        goal = PredictFocus.Goal()
        kind = self.rng.choice(["encoding", "size", "stamp", "age", "empty"])
        if kind == "encoding":
            goal.image = self._image(self.rng.choice(["yuv422", "", "rgb16", "32FC1", "bayer_xx"]))
        elif kind == "size":
            goal.image = self._image("rgb8")
            goal.image.width = self.rng.choice([1 << 30, 0, 7, 100000])
        elif kind == "stamp":
            goal.preview_stamp.sec = self.rng.choice([1, 2**31 - 1])
        elif kind == "age":
            goal.use_latest_preview = True
            goal.max_image_age = self.rng.choice([math.nan, -math.inf, -1.0, 1e300])
        goal.focus_z = self.rng.choice([math.nan, math.inf, 1e300, 0.0])
        return f"PredictFocus {kind}", lambda: self.c.run_goal("predict", goal, timeout=30.0)

    def stack(self) -> tuple[str, Callable[[], Outcome | None]]:
        from deepaf_msgs.action import AcquireFocalStack

        goal = AcquireFocalStack.Goal(
            use_current_position=True, z_range=4e-6, z_step=2e-6, output_dir=str(self.out / "st")
        )
        kind = self.rng.choice(["name", "range", "step", "crop", "position", "dir"])
        if kind == "name":
            goal.stack_name = self.rng.choice(
                ["./../evil", "../../x", "/abs/olute", "a/b", "..", ".", " ", "x" * 300]
            )
        elif kind == "range":
            goal.z_range = self.nasty()
        elif kind == "step":
            goal.z_step = self.rng.choice([1e-12, 0.0, -1e-6, math.nan, math.inf])
        elif kind == "crop":
            goal.crop_size = self.rng.choice([2**32 - 1, 1 << 20])
        elif kind == "position":
            goal.use_current_position = False
            goal.position.x, goal.position.y, goal.position.z = (self.nasty() for _ in range(3))
        else:
            goal.output_dir = self.rng.choice(["", "/proc/deepaf_fuzz", str(self.out / "f.txt")])
        return f"AcquireFocalStack {kind}", lambda: self.c.run_goal("stack", goal, timeout=60.0)

    def scan(self) -> tuple[str, Callable[[], Outcome | None]]:
        from deepaf_msgs.action import ScanSlide

        goal = ScanSlide.Goal(output_dir=str(self.out / f"scan_{self.rng.randrange(10**6)}"))
        goal.region_min.x, goal.region_min.y = 5e-3, 5e-3
        goal.region_max.x, goal.region_max.y = 5.5e-3, 5.5e-3
        kind = self.rng.choice(["region", "overlap", "step", "method", "start_z", "dir"])
        if kind == "region":
            goal.region_max.x = self.rng.choice([math.nan, math.inf, 1.0, -1.0])
        elif kind == "overlap":
            goal.overlap = self.rng.choice([math.nan, -1.0, 1.0, 5.0, math.inf])
        elif kind == "step":
            goal.step = self.rng.choice([-1e-4, math.nan, math.inf, 1e-9])
        elif kind == "method":
            goal.focus_method = self.rng.choice(["teleport", "DEEPAF", "deepaf; rm -rf /"])
        elif kind == "start_z":
            goal.use_start_z, goal.start_z = True, self.rng.choice([math.nan, 1.0, -1.0])
        else:
            goal.output_dir = self.rng.choice(["", "/proc/deepaf_fuzz", "relative/dir"])
        return f"ScanSlide {kind}", lambda: self.c.run_goal("scan", goal, timeout=60.0)

    # -- services and topics -----------------------------------------------------------------
    def capture(self) -> tuple[str, Callable[[], Outcome | None]]:
        from deepaf_msgs.srv import CaptureImage

        t = self.rng.choice([math.nan, math.inf, -math.inf, 1e12, 1e300, -5e-324])

        def call() -> Outcome:
            future = self.c._capture.call_async(CaptureImage.Request(timeout=t))
            if not self.c._wait(future, 30.0):
                return Outcome(Status.TIMED_OUT, None, "camera/capture: no answer")
            r = future.result()
            return Outcome(Status.SUCCEEDED if r.success else Status.FAILED, r, r.message)

        return f"CaptureImage timeout={t:g}", call

    def trajectory(self) -> tuple[str, Callable[[], Outcome | None]]:
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        names = self.rng.choice(
            [[], ["stage_x", "stage_x"], ["warp"], ["stage_x", "focus_z"], ["focus_z"]]
        )
        msg = JointTrajectory(joint_names=names)
        for _ in range(self.rng.choice([0, 1, 3])):
            n = len(names) + self.rng.choice([0, 0, 1])
            values = [self.rng.choice([*NASTY, 0.0151, -0.000501]) for _ in range(n)]
            msg.points.append(JointTrajectoryPoint(positions=values))
        return f"JointTrajectory {names} x{len(msg.points)}", lambda: self.traj.publish(msg)

    def image_topic(self) -> tuple[str, Callable[[], Outcome | None]]:
        img = self._image(self.rng.choice(["rgb8", "mono16", "yuv422", ""]))
        img.height = self.rng.choice([img.height, 0, 1 << 20])
        img.header.stamp.sec = self.rng.choice([0, 2**31 - 1, 5])
        return f"camera/image_raw {img.encoding!r} h={img.height}", lambda: self.images.publish(img)

    def freeze_camera(self, graph: GraphRunner) -> tuple[str, Callable[[], Outcome | None]]:
        """A camera that stops answering (SIGSTOP) during a capture, then resumes."""

        def call() -> Outcome:
            pid = graph.processes["camera"].proc.pid
            os.killpg(pid, signal.SIGSTOP)
            try:
                outcome = self.c.capture(timeout=3.0)
            finally:
                os.killpg(pid, signal.SIGCONT)
            return outcome

        return "camera frozen during a capture", call

    def _image(self, encoding: str):
        from sensor_msgs.msg import Image

        data = np.random.default_rng(self.rng.randrange(1 << 30)).integers(0, 255, 64 * 48 * 3)
        return Image(
            height=48,
            width=64,
            encoding=encoding,
            step=64 * 3,
            data=data.astype(np.uint8).tobytes(),
        )


def _good_requests(client: DeepAfClient) -> None:
    """The graph still serves: a small move, a capture and a prediction."""
    here = client.move_stage(timeout=30.0)
    assert here.ok, here.message
    z = here.result.position.z
    moved = client.move_stage(z=z + 2e-6, timeout=30.0)
    assert moved.ok and abs(moved.result.position.z - (z + 2e-6)) < 1e-7, moved.message
    deadline = time.monotonic() + 20.0
    shot = client.capture(timeout=30.0)
    while "already running" in shot.message and time.monotonic() < deadline:
        time.sleep(0.5)  # a capture a frozen camera resumed is finishing: retry, as told
        shot = client.capture(timeout=30.0)
    assert shot.ok, shot.message
    pred = client.predict_focus(timeout=30.0)
    assert pred.status in ANSWERED, pred.message


def test_fuzzed_inputs_and_faults_get_clear_answers_and_nothing_unsafe(tmp_path):
    import rclpy
    from deepaf_driver.sim.stage import StageLimits
    from sensor_msgs.msg import JointState

    ns = "fuzz"
    out = tmp_path / "out"
    out.mkdir()
    limits = StageLimits()
    before = _tree(tmp_path.parent, out)
    seen: list[tuple[float, float, float]] = []
    rclpy.init()
    try:
        with GraphRunner(
            ns,
            overrides={"profile": "4x"},
            node_overrides={"camera": CAMERA},
            log_dir=tmp_path / "logs",
        ) as graph:
            client = DeepAfClient(ns, server_timeout=90.0)
            client.node.create_subscription(
                JointState, f"/{ns}/joint_states", lambda m: seen.append(tuple(m.position)), 50
            )
            fz = Fuzzer(client, f"/{ns}", out, random.Random(FUZZ_SEED))
            _good_requests(client)  # up, and the model loaded
            makers = [fz.move, fz.move, fz.predict, fz.stack, fz.scan, fz.capture]
            makers += [fz.trajectory, fz.image_topic]
            cases = [fz.rng.choice(makers)() for _ in range(N_CASES - 1)]
            cases.append(fz.freeze_camera(graph))
            answers, history = {}, []
            for i, (name, call) in enumerate(cases):
                started = time.monotonic()
                outcome = call()
                client.spin(0.05)
                dead = graph.dead()
                assert not dead, f"case {i} ({name}) killed {dead}"
                if outcome is not None:
                    answers[name] = outcome.status
                    assert outcome.status in ANSWERED or "frozen" in name, (
                        f"case {i} ({name}): {outcome.status.value} after "
                        f"{time.monotonic() - started:.1f} s: {outcome.message}"
                    )
                    if outcome.status is not Status.SUCCEEDED:
                        assert outcome.message, f"case {i} ({name}) failed without a reason"
                history.append(
                    f"{i}: {name}: "
                    + (
                        "published"
                        if outcome is None
                        else f"{outcome.status.value} {outcome.message}"
                    )
                )
                if i % 8 == 7:
                    client.spin(0.5)  # let a trajectory run before the check
                    try:
                        _good_requests(client)
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}\nafter:\n" + "\n".join(history[-8:])) from None
            _good_requests(client)
            client.close()
    finally:
        rclpy.try_shutdown()
    assert len(cases) >= 40
    assert sum(s is not Status.SUCCEEDED for s in answers.values()) >= 20, answers
    assert seen, "no joint states received"
    pos = np.array(seen)
    assert pos[:, 0].min() >= limits.x_min_m - 1e-9 and pos[:, 0].max() <= limits.x_max_m + 1e-9
    assert pos[:, 1].min() >= limits.y_min_m - 1e-9 and pos[:, 1].max() <= limits.y_max_m + 1e-9
    assert pos[:, 2].min() >= limits.z_min_m - 1e-9 and pos[:, 2].max() <= limits.z_max_m + 1e-9
    escaped = _tree(tmp_path.parent, out) - before - {str(tmp_path / "logs")}
    escaped = {p for p in escaped if not p.startswith(str(tmp_path / "logs"))}
    assert not escaped, f"written outside the output directory: {sorted(escaped)[:5]}"
