"""What the camera and stage nodes share: parameter declaration, diagnostics, and `main`.

Environment: large images need `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA` and glibc malloc
tuning (`deepaf.environment.NODE_ENVIRONMENT`). Both act when the process starts, so a node
cannot set them for itself: the launch file, the `./deepaf` runner and `deepaf.testing`
apply them to every node process. Started by hand, export them first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
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


def run_node(
    factory: Callable[[], Node], args: Sequence[str] | None, name: str, threads: int = 4
) -> int:
    """Create the node and spin it on a MultiThreadedExecutor until shutdown.

    Returns 0 after a normal shutdown (Ctrl-C, SIGINT, external shutdown) and
    `EXIT_CONFIG_ERROR` when the configuration is refused; the reason goes to the log of
    the logger `name` (the node's name).
    """
    try:
        with rclpy.init(args=args):
            try:
                node = factory()
            except CONFIG_ERRORS as exc:
                rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
                return EXIT_CONFIG_ERROR
            executor = MultiThreadedExecutor(num_threads=threads)
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                executor.shutdown(timeout_sec=2.0)
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


def exit_with(status: int) -> None:
    """Exit the process with `status` when it is non-zero (console-script mains)."""
    if status:
        sys.exit(status)
