"""What the camera and stage nodes share: parameter declaration, diagnostics, and `main`.

Environment: large images need `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA` and glibc malloc
tuning (`deepaf.environment.NODE_ENVIRONMENT`). Both act when the process starts, so a node
cannot set them for itself: the launch file, the `./deepaf` runner and `deepaf.testing`
apply them to every node process. Started by hand, export them first.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from deepaf_driver.backends.base import BackendError

#: Errors that mean "bad configuration": the node exits with status 2 and the reason.
CONFIG_ERRORS = (ParameterException, ValueError, BackendError)

#: Exit status of a node refused by its configuration (bad parameter, unknown backend, ...).
EXIT_CONFIG_ERROR = 2


@dataclass(frozen=True)
class Param:
    """One node parameter: name, default (which fixes its type), description with unit.

    `bounds` becomes the descriptor's integer or floating-point range (by the default's
    type). Parameters are read once at start, so they are read-only unless `read_only=False`.
    """

    name: str
    default: Any
    description: str
    bounds: tuple[float, float] | None = None
    read_only: bool = True


def declare_all(node: Node, params: Sequence[Param]) -> dict[str, Any]:
    """Declare every parameter with its descriptor and return {name: value}.

    Raises:
        rclpy.exceptions.ParameterException: an override of the wrong type or out of range.
    """
    values = {}
    for p in params:
        descriptor = ParameterDescriptor(description=p.description, read_only=p.read_only)
        if p.bounds is not None and isinstance(p.default, int):
            lo, hi = (int(b) for b in p.bounds)
            descriptor.integer_range = [IntegerRange(from_value=lo, to_value=hi)]
        elif p.bounds is not None:
            lo, hi = (float(b) for b in p.bounds)
            descriptor.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
        values[p.name] = node.declare_parameter(p.name, p.default, descriptor).value
    return values


def diagnostic_array(
    node: Node, level: bytes, message: str, hardware_id: str, values: dict[str, object]
) -> DiagnosticArray:
    """Return a one-status DiagnosticArray named after the node's fully qualified name."""
    status = DiagnosticStatus(
        level=level,
        name=node.get_fully_qualified_name().lstrip("/"),
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


class NodeExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that stops without leaving failed callback tasks behind.

    rclpy hands each ready callback to its thread pool as a task. A task still queued when
    `shutdown()` destroys the executor's guard condition fails before its callback runs
    (`InvalidHandle: cannot use Destroyable because destruction was requested`), and as
    nothing retrieves it, rclpy prints "The following exception was never retrieved" at exit.
    `shutdown()` retrieves what its remaining tasks raised; anything but that InvalidHandle,
    raised while the context was still valid, goes to the log.
    """

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        """Stop, wait for callbacks in flight (`timeout_sec`), and retrieve their errors."""
        done = super().shutdown(timeout_sec, wait_for_threads=wait_for_threads)
        tasks = list(getattr(self, "_futures", ()))  # rclpy keeps its submitted tasks there
        tasks += [entry[0] for entry in list(getattr(self, "_tasks", ()))]  # ... and queued ones
        for task in tasks:
            if not task.done() or task.cancelled():
                continue
            exc = task.exception()  # retrieved: no "never retrieved" message at exit
            if exc is not None and not isinstance(exc, InvalidHandle) and self.context.ok():
                rclpy.logging.get_logger("executor").warning(f"callback failed: {exc!r}")
        return done


def retrieve_shutdown_errors() -> int:
    """Mark every finished rclpy future that failed with InvalidHandle as retrieved.

    After the context shut down, rclpy can leave such a future outside any executor's lists
    (a done callback scheduled while the executor's guard condition was being destroyed, as
    seen once in a launch test's Ctrl-C); each would print "The following exception was never
    retrieved" when collected. Called once at exit, after the node is destroyed. Returns how
    many it found.
    """
    from rclpy.task import Future

    found = 0
    for obj in gc.get_objects():
        if isinstance(obj, Future) and obj.done() and isinstance(obj._exception, InvalidHandle):
            obj.exception()
            found += 1
    return found


def run_node(
    factory: Callable[[], Node], args: Sequence[str] | None, name: str, threads: int = 4
) -> int:
    """Create the node and spin it on a MultiThreadedExecutor until shutdown.

    Returns 0 after a normal shutdown (Ctrl-C, SIGINT, SIGTERM, external shutdown) and
    `EXIT_CONFIG_ERROR` when the configuration is refused; the reason goes to the log of
    the logger `name` (the node's name). A callback that raises while the node runs still
    ends it with the traceback (exit status 1).

    rclpy's signal handler shuts the context down under a running executor, so on Ctrl-C the
    executor or a callback can fail before KeyboardInterrupt arrives ("failed to initialize
    wait set: the given context is not valid", "publisher's context is invalid"). An error
    raised once the context is no longer valid is that race: shutdown, not a crash. Stopping
    then runs to the end (executor, then `destroy_node`, which releases devices) even if a
    second signal arrives.
    """
    try:
        with rclpy.init(args=args) as init:
            try:
                node = factory()
            except CONFIG_ERRORS as exc:
                rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
                return EXIT_CONFIG_ERROR
            executor = NodeExecutor(num_threads=threads)
            executor.add_node(node)
            try:
                _spin(executor, init.context)
            finally:
                _stop(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


def _spin(executor: NodeExecutor, context: Context) -> None:
    """Spin until shutdown; errors raised after the context went invalid count as shutdown."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if context.ok():
            raise  # a callback failed while the node was running: a crash


def _stop(executor: NodeExecutor, node: Node) -> None:
    """Stop the executor (callbacks in flight get 2 s), then destroy the node, both always."""
    try:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.shutdown(timeout_sec=2.0)
    finally:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            node.destroy_node()
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            retrieve_shutdown_errors()


def quiet_on_shutdown(
    node: Node, execute: Callable[[Any], Any], result_type: type
) -> Callable[[Any], Any]:
    """Wrap an action server's (synchronous) execute callback for Ctrl-C during a goal.

    An error the callback raises after the node's context was shut down (its publishers and
    clients stop working) ends the goal with an empty `result_type` whose `message` says so,
    instead of rclpy's "Error raised in execute callback" traceback. Errors raised while the
    context is valid propagate as before. The goal is aborted (its final status cannot reach
    anyone now).
    """

    def run(handle: Any) -> Any:
        try:
            return execute(handle)
        except Exception:
            if node.context.ok():
                raise
            with contextlib.suppress(Exception):  # the state changes; its status cannot go out
                handle.abort()
            result = result_type()
            if hasattr(result, "message"):
                result.message = "the node shut down while the goal ran"
            return result

    return run


def exit_with(status: int) -> None:
    """Exit the process with `status` when it is non-zero (console-script mains)."""
    if status:
        sys.exit(status)
