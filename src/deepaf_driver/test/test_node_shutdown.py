"""Ctrl-C ends a node cleanly (`node_support.run_node`), whenever it arrives.

On SIGINT rclpy's signal handler shuts the context down under the running executor, so the
executor or a callback can fail before KeyboardInterrupt arrives ("failed to initialize wait
set: the given context is not valid"), and callbacks still queued when the executor shuts
down fail unretrieved ("cannot use Destroyable because destruction was requested"). A busy
peer (shutdown_peer.py) is interrupted at random moments, idle and during an action goal:
every run exits 0 with no traceback and no unretrieved exception. A callback that fails
while the node runs still ends it with exit status 1 and the traceback.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from deepaf.testing import NodeProcess, spin_until, wait_future
from rclpy.action import ActionClient

pytestmark = pytest.mark.ros

PEER = Path(__file__).with_name("shutdown_peer.py")
UNCLEAN = ("Traceback", "never retrieved", "Error raised in execute callback", "RCLError")


def _ready(proc: NodeProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while "peer ready" not in proc.output():
        assert proc.alive(), proc.output()
        assert time.monotonic() < deadline, f"peer not ready:\n{proc.output()}"
        time.sleep(0.05)


def test_ctrl_c_at_any_moment_exits_cleanly(namespace):
    rng = random.Random(13)
    for run in range(6):
        proc = NodeProcess([str(PEER)], ["-r", f"__ns:={namespace}_{run}"]).start()
        _ready(proc)
        time.sleep(rng.uniform(0.0, 1.0))
        code = proc.stop(timeout=20)
        out = proc.output()
        assert code == 0, f"run {run}: exit {code}\n{out[-3000:]}"
        for bad in UNCLEAN:
            assert bad not in out, f"run {run}: {bad!r} in\n{out[-3000:]}"


def test_ctrl_c_during_an_action_goal_exits_cleanly(ros_node, namespace):
    from deepaf_msgs.action import MoveStage

    client = ActionClient(ros_node, MoveStage, f"{namespace}/stage/move")
    with NodeProcess([str(PEER)], ["-r", f"__ns:={namespace}"]) as proc:
        _ready(proc)
        assert client.wait_for_server(timeout_sec=30), proc.output()
        feedback = []
        sent = client.send_goal_async(MoveStage.Goal(), feedback_callback=feedback.append)
        assert wait_future(ros_node, sent, 30, "goal accepted").accepted
        spin_until(ros_node, lambda: len(feedback) > 5, 30, "feedback")
        code = proc.stop(timeout=20)
    out = proc.output()
    assert code == 0, f"exit {code}\n{out[-3000:]}"
    for bad in UNCLEAN:
        assert bad not in out, f"{bad!r} in\n{out[-3000:]}"
    client.destroy()


def test_a_failing_callback_still_ends_the_node_with_status_1(namespace):
    with NodeProcess([str(PEER)], ["-r", f"__ns:={namespace}", "-p", "fail_after:=1.0"]) as proc:
        _ready(proc)
        deadline = time.monotonic() + 30
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not proc.alive(), "the node kept running after its callback failed"
        code = proc.stop()
    assert code == 1, proc.output()[-3000:]
    assert "deliberate failure in a timer callback" in proc.output()


def test_failed_futures_left_at_exit_are_retrieved(capfd):
    """The last sweep at exit marks InvalidHandle failures retrieved; others stay loud."""
    import gc

    from deepaf_driver.node_support import retrieve_shutdown_errors
    from rclpy.exceptions import InvalidHandle
    from rclpy.task import Future

    quiet, loud = Future(), Future()
    quiet.set_exception(InvalidHandle("cannot use Destroyable because destruction was requested"))
    loud.set_exception(RuntimeError("a real failure"))
    assert retrieve_shutdown_errors() >= 1
    del quiet, loud
    gc.collect()
    err = capfd.readouterr().err
    assert "destruction was requested" not in err
    assert "never retrieved: a real failure" in err
