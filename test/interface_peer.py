"""A peer node for the interface tests: serves deepaf_msgs/MoveStage from its own process.

It moves a point linearly towards the goal (speed parameter, metres per second), publishes
feedback each step, honours cancel with the position reached, and rejects non-finite goals. It
exercises the generated interfaces across processes; the product's stage node lives in
deepaf_driver.
"""

from __future__ import annotations

import math
import time

import rclpy
from geometry_msgs.msg import Point
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from deepaf_msgs.action import MoveStage


class InterfacePeer(Node):
    """Serve MoveStage with a simulated linear motion."""

    def __init__(self) -> None:
        super().__init__("interface_peer")
        self._speed = self.declare_parameter("speed", 0.002).value
        self._pos = [0.0, 0.0, 0.0]
        self._server = ActionServer(
            self,
            MoveStage,
            "stage/move",
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )

    def _on_goal(self, goal: MoveStage.Goal) -> GoalResponse:
        """Reject goals with infinite coordinates."""
        ok = all(math.isnan(v) or math.isfinite(v) for v in (goal.x, goal.y, goal.z))
        return GoalResponse.ACCEPT if ok else GoalResponse.REJECT

    def _execute(self, handle) -> MoveStage.Result:
        """Move in 20 ms steps, publishing feedback, until there or cancelled."""
        goal = handle.request
        target = [
            t if math.isfinite(t) and abs(t) < 1e299 else c  # NaN or UNCHANGED (1e300): stays
            for c, t in zip(self._pos, (goal.x, goal.y, goal.z), strict=True)
        ]
        start = time.monotonic()
        result = MoveStage.Result()
        while True:
            delta = [t - c for c, t in zip(self._pos, target, strict=True)]
            dist = math.sqrt(sum(d * d for d in delta))
            if handle.is_cancel_requested:
                handle.canceled()
                result.error_code = MoveStage.Result.CODE_CANCELED
                result.message = "cancelled on request"
                break
            if dist < 1e-12:
                handle.succeed()
                result.error_code = MoveStage.Result.CODE_SUCCEEDED
                break
            step = min(1.0, self._speed * 0.02 / dist)
            self._pos = [c + d * step for c, d in zip(self._pos, delta, strict=True)]
            handle.publish_feedback(
                MoveStage.Feedback(
                    position=Point(x=self._pos[0], y=self._pos[1], z=self._pos[2]),
                    distance_remaining=dist * (1 - step),
                )
            )
            time.sleep(0.02)
        result.position = Point(x=self._pos[0], y=self._pos[1], z=self._pos[2])
        result.duration = time.monotonic() - start
        return result


def main(args: list[str] | None = None) -> None:
    """Run the peer until interrupted."""
    try:
        with rclpy.init(args=args):
            node = InterfacePeer()
            executor = MultiThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
