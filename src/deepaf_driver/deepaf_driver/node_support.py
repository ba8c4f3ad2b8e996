"""What the camera and stage nodes share: parameter declaration, diagnostics, and `main`.

Environment: large images need `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA` and glibc malloc
tuning (`deepaf.environment.NODE_ENVIRONMENT`). Both act when the process starts, so a node
cannot set them for itself: the launch file, the `./deepaf` runner and `deepaf.testing`
apply them to every node process. Started by hand, export them first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from deepaf_driver.backends.base import BackendError
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

#: Errors that mean "bad configuration": the node exits with status 2 and the reason.
CONFIG_ERRORS = (ParameterException, ValueError, BackendError)

#: Exit status of a node refused by its configuration (bad parameter, unknown backend, ...).
EXIT_CONFIG_ERROR = 2


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    read_only: bool = False,
    float_range: tuple[float, float] | None = None,
    int_range: tuple[int, int] | None = None,
) -> Any:
    """Declare a parameter with a descriptor and return its value.

    Raises:
        rclpy.exceptions.ParameterException: an override of the wrong type or out of range.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if float_range is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(float_range[0]), to_value=float(float_range[1]))
        ]
    if int_range is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=int(int_range[0]), to_value=int(int_range[1]))
        ]
    return node.declare_parameter(name, default, descriptor).value


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


def run_node(factory: Callable[[], Node], args: Sequence[str] | None, threads: int = 4) -> int:
    """Create the node and spin it on a MultiThreadedExecutor until shutdown.

    Returns 0 after a normal shutdown (Ctrl-C, SIGINT, external shutdown) and
    `EXIT_CONFIG_ERROR` when the configuration is refused; the reason goes to the log.
    """
    try:
        with rclpy.init(args=args):
            try:
                node = factory()
            except CONFIG_ERRORS as exc:
                rclpy.logging.get_logger("deepaf_driver").fatal(f"cannot start: {exc}")
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
