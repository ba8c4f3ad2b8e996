"""The planner's view of the microscope over real DDS (stage, camera and focus server in their
own processes): frames are used only at the pose they were commanded to, a stage moved by a
second client fails the preview and the capture with both poses, and predictions name the
preview by its stamp instead of sending it back."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from deepaf.testing import NodeProcess
from deepaf_driver.backends.sim import make_microscope

pytestmark = pytest.mark.ros

SIM = ("4x", "lab_a_standard", 0)
PREVIEW, CAPTURE = (320, 180), (400, 300)
TIMEOUTS = {"discovery": 30.0, "move": 30.0, "preview": 3.0, "capture": 30.0, "predict": 30.0}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A checkpoint of the shipped 4x architecture (weights untrained: behaviour, not accuracy)."""
    import yaml
    from deepaf.environment import repo_root
    from deepaf_focus.checkpoint import save_checkpoint
    from deepaf_focus.model import build_model

    cfg = yaml.safe_load((repo_root() / "src/deepaf_focus/config/shipped_4x.yaml").read_text())
    path = tmp_path_factory.mktemp("model") / "net.pt"
    save_checkpoint(path, build_model(cfg["model"]))
    return path


class _Spun:
    """A RosMicroscope on the test node, its callbacks served by a background executor."""

    def __init__(self, node, namespace: str) -> None:
        import rclpy
        from deepaf_planner.ros_microscope import RosMicroscope
        from rclpy.executors import MultiThreadedExecutor

        node = self.node = rclpy.create_node("planner", namespace=namespace, context=node.context)
        self.scope = RosMicroscope(node, TIMEOUTS, preview_time=0.03)
        self.scope.pose_tolerance = (0.1e-6, 1e-6)
        self._executor = MultiThreadedExecutor(num_threads=4)
        self._executor.add_node(node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.scope.destroy()
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


def _nodes(namespace: str, model_path=None) -> list[NodeProcess]:
    ns = ["-r", f"__ns:={namespace}"]
    camera = [
        *ns,
        "-p", f"preview_width:={PREVIEW[0]}", "-p", f"preview_height:={PREVIEW[1]}",
        "-p", f"capture_width:={CAPTURE[0]}", "-p", f"capture_height:={CAPTURE[1]}",
        "-p", "noise:=false", "-p", "preview_rate:=30.0",
    ]  # fmt: skip
    procs = [
        NodeProcess(["-m", "deepaf_driver.stage_node"], [*ns, "-p", "time_scale:=0.0"]),
        NodeProcess(["-m", "deepaf_driver.camera_node"], camera),
    ]
    if model_path is not None:
        procs.append(
            NodeProcess(
                ["-m", "deepaf_focus.focus_server"],
                [*ns, "-p", f"model:={model_path}", "-p", "preview_history:=8"],
            )
        )
    return procs


def _field():
    scope = make_microscope(*SIM, preview_size=PREVIEW, capture_size=CAPTURE)
    x, y = scope.random_tissue_position(np.random.default_rng(4))
    step = scope.stage.z_step_m
    return scope, (x, y, round(float(scope.best_focus_z(x, y)) / step) * step)


def test_frames_are_used_only_at_the_commanded_pose(ros_node, namespace):
    from deepaf.client import DeepAfClient
    from deepaf_planner.scanner import HardwareError

    procs = _nodes(namespace)
    for p in procs:
        p.start()
    spun = other = None
    try:
        sim, (x, y, z) = _field()
        spun = _Spun(ros_node, namespace)
        scope = spun.scope
        scope.check_servers(need_focus=False)
        reached = scope.move_to(x, y, z).pose
        frame = scope.preview()  # the first frame tagged with the pose reached
        np.testing.assert_array_equal(frame.rgb, sim.preview(*reached, noise=False))
        shot = scope.capture()
        np.testing.assert_array_equal(shot.rgb, sim.capture(*reached, noise=False))

        # a second client moves the stage 0.1 mm while the scan "waits": refused, both poses
        import rclpy

        other_node = rclpy.create_node("second_client", context=ros_node.context)
        other = DeepAfClient(namespace, node=other_node, server_timeout=30.0)
        from deepaf.testing import spin_until
        from deepaf_driver.qos import POSE_QOS
        from geometry_msgs.msg import PointStamped

        poses: list[float] = []
        other_node.create_subscription(
            PointStamped, f"{namespace}/camera/pose", lambda m: poses.append(m.point.x), POSE_QOS
        )
        assert other.move_stage(x=x + 1e-4, timeout=30.0).ok
        # the camera has exposed at the new pose (on a loaded machine the frames already on
        # their way still show the old one, which the scan may rightly use)
        spin_until(other_node, lambda: any(abs(v - (x + 1e-4)) < 1e-9 for v in poses), 20, "pose")
        with pytest.raises(HardwareError, match="another client moved the stage") as preview:
            scope.preview()
        assert f"{(x + 1e-4) * 1e3:.4f}" in str(preview.value)  # where the frames were
        assert f"{x * 1e3:.4f}" in str(preview.value)  # and where they should have been
        with pytest.raises(HardwareError, match="camera/capture: the capture shows the stage"):
            scope.capture()

        # back where the scan commanded: frames are used again
        reached = scope.move_to(x, y, z).pose
        np.testing.assert_array_equal(scope.preview().rgb, sim.preview(*reached, noise=False))
    finally:
        if other is not None:
            other.close()
        if spun is not None:
            spun.close()
        for p in procs:
            p.stop()


def test_predictions_name_the_preview_by_stamp(ros_node, namespace, model_path):
    from deepaf_planner.scanner import Frame

    procs = _nodes(namespace, model_path)
    for p in procs:
        p.start()
    spun = None
    try:
        _, (x, y, z) = _field()
        spun = _Spun(ros_node, namespace)
        scope = spun.scope
        scope.check_servers(need_focus=True)
        scope.move_to(x, y, z)
        # warm-up: a server started a moment ago may not hold the first frames yet
        scope.predict_focus(scope.preview(), z)
        base = dict(scope.predict_stats)

        def stats() -> dict:
            return {k: scope.predict_stats[k] - base[k] for k in base}

        # A frame named by stamp travels no more. At load (CI) the server's first inference
        # can take seconds while previews stream on, so the frame taken meanwhile may have
        # left its history: the miss is then sent as an image (checked below). Three tries.
        clean = {"goals": 1, "with_image": 0, "image_bytes": 0, "by_stamp_miss": 0}
        for _ in range(3):
            base = dict(scope.predict_stats)
            frame = scope.preview()
            by_stamp = scope.predict_focus(frame, z)
            if stats() == clean:
                break
        assert stats() == clean, procs[-1].output()
        base = {k: scope.predict_stats[k] - v for k, v in clean.items()}
        scope.predict_by_stamp = False
        sent = scope.predict_focus(frame, z)
        assert stats()["image_bytes"] == PREVIEW[0] * PREVIEW[1] * 3
        assert (sent.status, sent.offset_m) == (by_stamp.status, by_stamp.offset_m)
        scope.predict_by_stamp = True
        other = scope.predict_focus(Frame(frame.rgb.copy(), 0.0), z)  # not a stream frame
        assert other.status == by_stamp.status
        assert stats()["with_image"] == 2
        # a preview the server no longer holds travels after all
        old = scope.preview()
        for _ in range(12):  # more frames than the server keeps (preview_history 8)
            scope.move_to(z=z + 1e-6 if _ % 2 else z)
            scope.preview()
        again = scope.predict_focus(old, z)
        assert again.status == by_stamp.status
        assert stats()["by_stamp_miss"] == 1
    finally:
        if spun is not None:
            spun.close()
        for p in procs:
            p.stop()
