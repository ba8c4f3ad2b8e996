"""`./deepaf calibrate --live`: the field search and stack acquisition against a stand-in
microscope (fast, no ROS), then the whole path against the real graph over DDS."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from deepaf.calibrate_command import (
    AcquiredStack,
    acquire_stacks,
    main,
    parse_fields,
    spiral_fields,
)
from deepaf_driver.sim.dataset import DatasetSpec, write_dataset

MODEL_DIR = Path(__file__).resolve().parents[2] / "deepaf_focus" / "models"
V1 = MODEL_DIR / "deepaf_20x_v1.pt"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One real virtual-microscope stack (dz -2..+2 um) the stand-in microscope copies."""
    spec = DatasetSpec(
        stacks=1, protocols=("lab_a_standard",), range_m=2e-6, step_m=1e-6, patch=160, seed=5
    )
    return write_dataset(tmp_path_factory.mktemp("tpl") / "ds", spec, 1, False) / "stack_00000"


class StandIn:
    """A microscope whose fields are glass, out of reach or tissue with a known focus."""

    def __init__(self, template: Path, focus: dict, glass=(), unreachable=()) -> None:
        self.template, self.focus = template, focus
        self.glass, self.unreachable = set(glass), set(unreachable)
        self.here = (0.0, 0.0)
        self.acquired: list[tuple[float, float, float]] = []

    def _key(self, x: float, y: float) -> tuple[int, int]:
        return (round(x * 1e4), round(y * 1e4))  # 0.1 mm grid

    def position(self):
        return (0.0, 0.0, 1e-6)

    def move_xy(self, x, y):
        if self._key(x, y) in self.unreachable:
            return False
        self.here = (x, y)
        return True

    def tissue_here(self):
        return self._key(*self.here) not in self.glass

    def acquire(self, out_dir, xyz, range_m, step_m):
        """Write a stack around xyz[2] labelled with this field's focus (truth)."""
        self.acquired.append(xyz)
        out_dir.mkdir(parents=True, exist_ok=True)
        index = out_dir / "dataset.json"
        head = (
            json.loads(index.read_text())
            if index.exists()
            else {"format": "deepaf-focal-stack", "version": 1, "stacks": []}
        )
        name = f"stack_{len(self.acquired):05d}"
        shutil.copytree(self.template, out_dir / name)
        meta = json.loads((out_dir / name / "meta.json").read_text())
        zs = [xyz[2] + (i - 2) * 1e-6 for i in range(5)]
        for img, z in zip(meta["images"], zs, strict=True):
            img["z_m"] = z
        best = self.focus[self._key(*self.here)]
        meta.update(best_focus_z_m=best, best_focus_source="simulator")
        (out_dir / name / "meta.json").write_text(json.dumps(meta))
        head["stacks"].append(name)
        index.write_text(json.dumps(head))
        return AcquiredStack(out_dir / name, best, "simulator")


def test_fields_spiral_outwards_and_parse():
    pts = spiral_fields(1e-3, 2e-3, 0.5e-3, 9)
    assert pts[0] == (1e-3, 2e-3) and len(set(pts)) == 9
    dist = [math.hypot(x - 1e-3, y - 2e-3) for x, y in pts]
    assert dist == sorted(dist) and max(dist) == pytest.approx(math.sqrt(2) * 0.5e-3)
    assert parse_fields("7.5,7.5; 8,7.25") == [(7.5e-3, 7.5e-3), (8e-3, 7.25e-3)]
    with pytest.raises(ValueError, match="not 'x,y'"):
        parse_fields("7.5")


def test_acquisition_skips_glass_and_recentres_on_focus(template, tmp_path):
    # spiral from (0, 0) with 1 mm pitch: (0,0), (0,-1), (1,0), (0,1), (-1,0), ... (0.1 mm keys)
    focus = {(0, 0): 1.5e-6, (0, 10): 9e-6, (-10, 0): 8e-6}
    scope = StandIn(template, focus, glass={(0, -10)}, unreachable={(10, 0)})
    lines: list[str] = []
    got = acquire_stacks(scope, tmp_path / "ds", 3, 2e-6, 1e-6, field_step_m=1e-3, log=lines.append)
    assert len(got) == 3
    # the first stack is centred on the current z; the (0, 1) field's focus (+9 um) is outside
    # the stack around the previous focus (+1.5 um): removed and re-acquired around it; the
    # next field starts from there
    assert [round(z * 1e6, 3) for _, _, z in scope.acquired] == [1.0, 1.5, 9.0, 9.0]
    text = "\n".join(lines)
    assert "re-acquiring around +9.00 um" in text
    assert "no tissue in the preview" in text and "outside the stage limits" in text
    index = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert index["stacks"] == [p.name for p in got] == ["stack_00001", "stack_00003", "stack_00004"]
    assert not (tmp_path / "ds" / "stack_00002").exists()


def test_live_usage_errors(tmp_path, capsys):
    assert main(["--live", "--out", str(tmp_path / "x.pt"), "--fields-mm", "1"]) == 2
    assert "--fields-mm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.pt")])  # neither --data nor --live


@pytest.mark.ros
def test_live_calibration_against_the_graph(tmp_path, namespace):
    """The real graph on the virtual microscope: find tissue, acquire, calibrate."""
    import numpy as np
    import rclpy
    from deepaf.client import DeepAfClient
    from deepaf.runner import GraphRunner
    from deepaf_driver.backends.sim import SCAN_SLIDE
    from deepaf_driver.sim import VirtualMicroscope
    from deepaf_focus.calibrate import CalibrationConfig

    camera = {"capture_width": 2028, "capture_height": 1520}
    camera |= {"preview_width": 640, "preview_height": 360}  # the deployed sampling ratio
    scope = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0, slide=SCAN_SLIDE)
    x, y = scope.random_tissue_position(np.random.default_rng(3))
    z = float(scope.best_focus_z(x, y)) + 0.4e-6  # roughly focused, as a user would
    ns = namespace.strip("/")
    overrides = {"profile": "20x", "sim_protocol": "lab_a_standard", "sim_slide_seed": 0}
    rclpy.init()
    try:
        graph = GraphRunner(ns, overrides=overrides, node_overrides={"camera": camera})
        with graph:
            client = DeepAfClient(ns, server_timeout=60.0)
            try:
                assert client.move_stage(x=x, y=y, z=z, timeout=60.0).ok
                report = client.calibrate(
                    str(tmp_path / "scope.pt"),
                    stacks=2,
                    range_m=2e-6,
                    step_m=1e-6,
                    crop_size=160,
                    field_step_m=0.2e-3,
                    model=V1,
                    config=CalibrationConfig(minutes=1, epochs=3),
                    verbose=False,
                )
            finally:
                client.close()
            logs = {name: p.output()[-2000:] for name, p in graph.processes.items()}
    finally:
        rclpy.try_shutdown()
    dataset = tmp_path / "scope_stacks"
    assert report["dataset"] == str(dataset), logs
    index = json.loads((dataset / "dataset.json").read_text())
    assert len(index["stacks"]) == 2
    meta = json.loads((dataset / index["stacks"][0] / "meta.json").read_text())
    assert meta["best_focus_source"] == "simulator" and len(meta["images"]) == 5
    assert len(report["held_back_stacks"]) == 1 and len(report["fine_tune_stacks"]) == 1
    assert report["before"]["n"] == report["after"]["n"] > 0
    assert (tmp_path / "scope.pt").exists() == report["kept"]
