"""A busy node for the shutdown tests, run through `node_support.run_node` like every node.

A 1 kHz timer publishes on a topic the node also subscribes to, and a 100 Hz timer sleeps in
its callback, so the executor rebuilds its wait set and hands callbacks to its thread pool all
the time: the window in which Ctrl-C shuts the context down under a running executor. It also
serves deepaf_msgs/MoveStage with a goal that runs until cancelled, publishing feedback every
10 ms (wrapped with `quiet_on_shutdown`, as the planner's actions are). `fail_after` > 0 makes
the fast timer raise after that many seconds: a real crash, which must still end the node
with exit status 1.
"""

from __future__ import annotations

import time

from deepaf_driver.node_support import exit_with, quiet_on_shutdown, run_node
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from deepaf_msgs.action import MoveStage


class ShutdownPeer(Node):
    """Timers, a topic loop and a never-ending action goal."""

    def __init__(self) -> None:
        super().__init__("shutdown_peer")
        self._fail_after = self.declare_parameter("fail_after", 0.0).value
        self._start = time.monotonic()
        group = ReentrantCallbackGroup()
        self._pub = self.create_publisher(String, "chatter", 10)
        self.create_subscription(String, "chatter", lambda _: None, 10, callback_group=group)
        self.create_timer(0.001, self._tick, callback_group=group)
        self.create_timer(0.01, lambda: time.sleep(0.05), callback_group=group)
        self._server = ActionServer(
            self,
            MoveStage,
            "stage/move",
            execute_callback=quiet_on_shutdown(self, self._execute, MoveStage.Result),
            goal_callback=lambda _: GoalResponse.ACCEPT,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self.get_logger().info("peer ready")

    def _tick(self) -> None:
        """Publish; raise once `fail_after` seconds have passed (when set)."""
        if self._fail_after and time.monotonic() - self._start > self._fail_after:
            raise RuntimeError("deliberate failure in a timer callback")
        self._pub.publish(String(data="x"))

    def _execute(self, handle) -> MoveStage.Result:
        """Publish feedback until cancelled."""
        while not handle.is_cancel_requested:
            handle.publish_feedback(MoveStage.Feedback(distance_remaining=1.0))
            time.sleep(0.01)
        handle.canceled()
        return MoveStage.Result(message="canceled")

    def destroy_node(self) -> None:
        """Release the action server before the node."""
        self._server.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the peer until interrupted."""
    exit_with(run_node(ShutdownPeer, args, "shutdown_peer"))


if __name__ == "__main__":
    main()
