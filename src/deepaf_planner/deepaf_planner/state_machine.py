"""The scan's explicit state machine (python-statemachine), ROS-free.

    idle -> planning -> moving -> previewing -> detecting -> focusing -> capturing
                          ^                          |  (empty glass)       |  (sharpness
                          +------- next_field -------+----------------------+   failed:
    planning|detecting|capturing -> stitching -> done                          refocus)
    any active state -> canceled | failed

State names equal deepaf_msgs/ScanStatus STATE_* values, so the node publishes
`machine.current_state_value` as is. An event that is not allowed in the current state raises
`TransitionNotAllowed`: the scan loop cannot skip a step silently.
"""

from __future__ import annotations

from collections.abc import Callable

from statemachine import State, StateMachine


class ScanMachine(StateMachine):
    """States and transitions of one scan. Create a new machine per scan."""

    idle = State("idle", value="idle", initial=True)
    planning = State("planning", value="planning")
    moving = State("moving", value="moving")
    previewing = State("previewing", value="previewing")
    detecting = State("detecting", value="detecting")
    focusing = State("focusing", value="focusing")
    capturing = State("capturing", value="capturing")
    stitching = State("stitching", value="stitching")
    done = State("done", value="done", final=True)
    canceled = State("canceled", value="canceled", final=True)
    failed = State("failed", value="failed", final=True)

    start = idle.to(planning)
    go_to_field = planning.to(moving) | detecting.to(moving) | capturing.to(moving)
    arrived = moving.to(previewing)
    previewed = previewing.to(detecting)
    tissue_found = detecting.to(focusing)
    focused = focusing.to(capturing)
    refocus = capturing.to(focusing)
    all_fields_done = planning.to(stitching) | detecting.to(stitching) | capturing.to(stitching)
    stitched = stitching.to(done)
    cancel = (
        planning.to(canceled)
        | moving.to(canceled)
        | previewing.to(canceled)
        | detecting.to(canceled)
        | focusing.to(canceled)
        | capturing.to(canceled)
        | stitching.to(canceled)
    )
    fail = (
        idle.to(failed)
        | planning.to(failed)
        | moving.to(failed)
        | previewing.to(failed)
        | detecting.to(failed)
        | focusing.to(failed)
        | capturing.to(failed)
        | stitching.to(failed)
    )

    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        """Args: on_change: called with the new state's value after every transition."""
        self._on_change = on_change
        super().__init__()

    def on_enter_state(self, state: State) -> None:
        """Report every state entered (including the initial one)."""
        if self._on_change is not None:
            self._on_change(state.value)

    @property
    def state(self) -> str:
        """Value of the current state (a ScanStatus STATE_* string)."""
        return self.current_state_value

    @property
    def finished(self) -> bool:
        """True in done, canceled or failed."""
        return self.state in {"done", "canceled", "failed"}
