"""The planner node: serves `scan_slide` (ScanSlide) and `acquire_focal_stack` (AcquireFocalStack).

It is a thin adapter: goals become :class:`ScanRequest`s for the ROS-free
:class:`deepaf_planner.scanner.Scanner`, which drives the stage, camera and focus server
through :class:`RosMicroscope`. Publishes `scan/status` (ScanStatus, transient local) and
`scan/tiles` (ScanTile). One scan at a time: a goal while another runs is aborted with the
reason before anything moves; so is any goal that fails validation.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

from deepaf_driver.conversions import point
from deepaf_driver.node_support import exit_with, quiet_on_shutdown, run_node
from deepaf_focus.tissue import PAPER_VALUE_THRESHOLD
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile

from deepaf_msgs.action import AcquireFocalStack, ScanSlide
from deepaf_msgs.msg import ScanStatus, ScanTile
from deepaf_planner.focal_stack import acquire_focal_stack
from deepaf_planner.outputs import finish_scan, write_partial_report
from deepaf_planner.paths import goal_output_dir
from deepaf_planner.report import TileRecord, completion_message
from deepaf_planner.ros_microscope import RosMicroscope
from deepaf_planner.scanner import (
    FOCUS_METHODS,
    PREDICTING_METHODS,
    HardwareError,
    Scanner,
    ScanProgress,
    ScanRequest,
)
from deepaf_planner.sim_truth import profile_optics, sim_truth_from_parameters
from deepaf_planner.slide_formats import DEFAULT_SLIDE_FORMAT, SLIDE_FORMATS, slide_format
from deepaf_planner.stitching import STITCH_CONFIG


class PlannerNode(Node):
    """Scan state machine and focal-stack acquisition over the driver and focus nodes."""

    def __init__(self) -> None:
        super().__init__("planner")
        d = ParameterDescriptor
        p = self.declare_parameter
        self._profile = p("profile", "4x", d(description="optics profile: 4x | 20x")).value
        self._method = p(
            "focus_method",
            "deepaf",
            d(description="default focus method: " + " | ".join(FOCUS_METHODS)),
        ).value
        pixel = p(
            "pixel_size",
            0.0,
            d(description="[m] capture pixel at the sample; 0 = from the optics profile"),
        ).value
        half_dof = p(
            "half_dof",
            0.0,
            d(description="[m] half the depth of field; 0 = from the optics profile"),
        ).value
        optics = profile_optics(self._profile) if not (pixel and half_dof) else None
        self._pixel = pixel or optics.pixel_size_m
        self._half_dof = half_dof or optics.half_dof_m
        self._stack_range = (
            p(
                "stack_range",
                0.0,
                d(description="[m] half range of the stack search's first interval; 0 = 3 DoF"),
            ).value
            or None
        )
        self._focus_map_spacing = p(
            "focus_map_spacing",
            3,
            d(description="focus_map surveys every this many rows and columns"),
        ).value
        self._bias_fields = p(
            "bias_fields",
            2,
            d(
                description="deepaf: verified tiles per scan confirmed by a short search, to "
                "learn the model's focus bias on this slide (0: trust the model)"
            ),
        ).value
        self._overview_step_fields = p(
            "overview_step_fields",
            2.0,
            d(
                description="whole-slide scans: the overview sweep previews every this many "
                "fields of view (0.5..20)",
                floating_point_range=[FloatingPointRange(from_value=0.5, to_value=20.0)],
            ),
        ).value
        self._save_search_stacks = p(
            "save_search_stacks",
            False,
            d(description="keep classical focus searches as focal stacks in <scan>/focus_stacks"),
        ).value
        self._stitch_cache_mb = p(
            "stitch_cache_mb",
            STITCH_CONFIG.cache_bytes >> 20,
            d(
                description="[MiB] decoded tiles kept while their part of the slide awaits "
                "its blend (evicted ones are re-read from their PNG; about five rows of tiles "
                "at 36 MiB each are wanted; a 4 GB Raspberry Pi: 512)",
                integer_range=[IntegerRange(from_value=64, to_value=65536, step=1)],
            ),
        ).value
        slide_format(  # fails fast with the choices; read again at each goal
            p(
                "slide_format",
                DEFAULT_SLIDE_FORMAT,
                d(
                    description="stitched slide format: "
                    + " | ".join(f"{f.name} ({f.file_name})" for f in SLIDE_FORMATS.values())
                ),
            ).value
        )
        self._timeouts = {
            "discovery": p("discovery_timeout", 10.0, d(description="[s]")).value,
            "move": p("move_timeout", 30.0, d(description="[s]")).value,
            "preview": p("preview_timeout", 5.0, d(description="[s]")).value,
            "capture": p("capture_timeout", 60.0, d(description="[s]")).value,
            "predict": p("predict_timeout", 10.0, d(description="[s]")).value,
        }
        preview_time = p(
            "preview_time",
            0.033,
            d(description="[s] exposure time of one preview (simulated clock)"),
        ).value
        self._tissue_method = p(
            "tissue_method",
            "colour",
            d(
                description="tissue detection: colour (per-pixel saturation / optical density) | "
                "paper (mean HSV value below value_threshold)"
            ),
        ).value
        self._value_threshold = p(
            "value_threshold",
            PAPER_VALUE_THRESHOLD,
            d(description="[0..1] paper method: mean HSV value below which a field is tissue"),
        ).value
        self._publish_full = p(
            "publish_full_resolution",
            False,
            d(description="also publish every capture on camera/image_full (for recording)"),
        ).value
        self._verify_tolerance = p(
            "verify_tolerance",
            0.0,
            d(
                description="[m] largest |focus re-prediction on the capture| that verifies a "
                "tile; 0 = 1 half depth of field (deepaf re-shoots above 0.6 of it)"
            ),
        ).value
        self._max_expected_error = p(
            "max_expected_error",
            0.0,
            d(
                description="[m] predictions expected to be off by more go straight to the "
                "classical fallback search; 0 = 5 half depths of field"
            ),
        ).value
        self._sim_truth = sim_truth_from_parameters(self, self._profile)

        # A frame is used only where it was commanded (ros_microscope): x/y within a quarter
        # of a capture pixel (stitching registers tiles to the pixel), z within 1/8 of the half
        # depth of field (a 16th of the DoF, below the quarter-DoF focus search tolerance).
        tol_xy = p(
            "pose_tolerance_xy",
            0.0,
            d(
                description="[m] largest x/y distance between a frame's pose at exposure and "
                "the commanded pose; 0 = a quarter capture pixel",
                read_only=True,
            ),
        ).value
        tol_z = p(
            "pose_tolerance_z",
            0.0,
            d(
                description="[m] largest focus_z distance between a frame's pose and the "
                "commanded one; 0 = half_dof / 8",
                read_only=True,
            ),
        ).value
        if not (math.isfinite(tol_xy) and tol_xy >= 0 and math.isfinite(tol_z) and tol_z >= 0):
            raise ValueError(f"pose tolerances must be >= 0 m, got {tol_xy}, {tol_z}")
        predict_by_stamp = p(
            "predict_by_stamp",
            True,
            d(
                description="name previews by stamp in PredictFocus goals (the focus server "
                "holds them) instead of sending the image back"
            ),
        ).value
        self._scope = RosMicroscope(self, self._timeouts, preview_time)
        self._scope.publish_full = self._publish_full
        self._scope.pose_tolerance = (tol_xy or self._pixel / 4, tol_z or self._half_dof / 8)
        self._scope.predict_by_stamp = predict_by_stamp
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._status_pub = self.create_publisher(ScanStatus, "scan/status", latched)
        self._tile_pub = self.create_publisher(ScanTile, "scan/tiles", 50)
        self._busy = threading.Lock()
        self._scan_id = ""
        group = ReentrantCallbackGroup()
        self._scan_server = ActionServer(
            self,
            ScanSlide,
            "scan_slide",
            execute_callback=quiet_on_shutdown(self, self._execute_scan, ScanSlide.Result),
            goal_callback=lambda _: GoalResponse.ACCEPT,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self._stack_server = ActionServer(
            self,
            AcquireFocalStack,
            "acquire_focal_stack",
            execute_callback=quiet_on_shutdown(self, self._execute_stack, AcquireFocalStack.Result),
            goal_callback=lambda _: GoalResponse.ACCEPT,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self._publish_status(ScanProgress("idle", 0, 0, 0, 0, 0, 0.0, math.nan))
        self.get_logger().info("planner ready: scan_slide, acquire_focal_stack")

    # -- scan ---------------------------------------------------------------------------
    def _request(self, goal: ScanSlide.Goal) -> ScanRequest:
        """Translate a goal into a ScanRequest (defaults filled in; limits from the stage)."""
        limits, (width, height) = self._scope.limits(), self._scope.capture_size()
        fov = (width * self._pixel, height * self._pixel)
        if goal.region_min.x == goal.region_max.x and goal.region_min.y == goal.region_max.y:
            rmin, rmax = (limits.x[0], limits.y[0]), (limits.x[1], limits.y[1])
        else:
            rmin, rmax = (
                (goal.region_min.x, goal.region_min.y),
                (goal.region_max.x, goal.region_max.y),
            )
        output_dir = goal_output_dir(goal.output_dir, "slide")
        if not (math.isfinite(goal.overlap) and 0.0 <= goal.overlap < 0.5):
            raise ValueError(
                f"overlap {goal.overlap} is not a fraction in [0, 0.5) of the field "
                "(0 = the default 0.1)"
            )
        return ScanRequest(
            region_min=rmin,
            region_max=rmax,
            field_of_view=fov,
            pixel_size=self._pixel,
            limits=limits,
            output_dir=output_dir,
            overlap=goal.overlap or 0.1,
            step=goal.step if goal.step != 0 else None,
            focus_method=goal.focus_method or self._method,
            start_z=goal.start_z if goal.use_start_z else None,
            resume=goal.resume,
            keep_empty_fields=goal.keep_empty_fields,
            whole_slide=goal.whole_slide,
            overview_step_fields=self._overview_step_fields,
            stitch_cache_mb=int(self._stitch_cache_mb),
            stack_range=self._stack_range,
            focus_map_spacing=self._focus_map_spacing,
            bias_fields=max(0, int(self._bias_fields)),
            save_search_stacks=self._save_search_stacks,
            profile=self._profile,
            half_dof=self._half_dof,
            tissue_method=self._tissue_method,
            value_threshold=self._value_threshold,
            refocus_tolerance=2 * self._half_dof,
            verify_tolerance=self._verify_tolerance or None,
            max_expected_error=self._max_expected_error or None,
        )

    def _finish(self, scanner, machine, req, tiles, journal, start: float) -> dict | None:
        """Write the slide and outputs of a scan that reached stitching; None otherwise."""
        if machine.state != "stitching":
            return None
        try:
            report = finish_scan(
                req, tiles, journal, scanner.sim_seconds, time.monotonic() - start,
                live=scanner.live,
            )  # fmt: skip
        except (OSError, ValueError, RuntimeError) as exc:
            scanner.error = f"stitching failed: {exc}"
            machine.fail()
            return None
        log = self.get_logger()
        if scanner.live is not None and scanner.live.error:
            log.warning(f"{scanner.live.error}; the slide was stitched from the tiles on disk")
        if math.isfinite(report["stitch_final_s"]):
            log.info(f"slide written {report['stitch_final_s']:.1f} s after the last tile")
        if report["late_tiles"]:
            log.warning(
                f"{report['late_tiles']} tiles landed beyond the blending margin: part of "
                "their pixels is missing from the slide"
            )
        machine.stitched()
        return report

    def _truth(self):
        """Simulator ground truth, only while the camera is the virtual microscope's (the
        `sim_truth` parameter on and the camera node's backend "sim"); None on hardware."""
        if self._sim_truth is None:
            return None
        try:
            backend = self._scope.camera_backend()
        except HardwareError as exc:
            self.get_logger().warning(f"no simulator truth: camera backend unknown ({exc})")
            return None
        if backend != "sim":
            self.get_logger().info(f"camera backend {backend!r}: no simulator truth in reports")
            return None
        return self._sim_truth

    def _execute_scan(self, handle) -> ScanSlide.Result:
        """Run one scan; every path returns a result with the reason."""
        result = ScanSlide.Result()
        if not self._busy.acquire(blocking=False):
            handle.abort()
            result.message = f"another scan is running ({self._scan_id}); cancel it or wait"
            return result
        start = time.monotonic()
        try:
            try:
                method = handle.request.focus_method or self._method
                self._scope.check_servers(need_focus=method in PREDICTING_METHODS)
                req = self._request(handle.request)
                fmt = slide_format(self.get_parameter("slide_format").value).name
                req = dataclasses.replace(req, slide_format=fmt)
            except (ValueError, HardwareError) as exc:
                handle.abort()
                result.message = f"rejected before moving: {exc}"
                self.get_logger().error(result.message)
                return result
            self._scan_id = req.output_dir.name
            result.output_dir = str(req.output_dir)

            def progress(p: ScanProgress) -> None:
                msg = self._publish_status(p)
                handle.publish_feedback(ScanSlide.Feedback(status=msg))

            scanner = Scanner(
                self._scope,
                self._truth(),
                progress,
                self._publish_tile,
                lambda: handle.is_cancel_requested,
            )
            try:
                try:
                    machine, tiles, journal = scanner.run(req)
                except (ValueError, OSError) as exc:
                    handle.abort()
                    result.message = f"rejected before moving: {exc}"
                    self.get_logger().error(result.message)
                    return result
                report = self._finish(scanner, machine, req, tiles, journal, start)
            finally:
                if scanner.live is not None:  # its worker, image cache and scratch file
                    scanner.live.close()
            if scanner.overview is not None:
                self.get_logger().info(scanner.overview.text)
            if machine.state in ("canceled", "failed"):
                result.report_path = str(
                    write_partial_report(
                        req, tiles, scanner.sim_seconds, time.monotonic() - start, scanner.error
                    )
                )
            self._fill_result(
                result, tiles, scanner.sim_seconds, time.monotonic() - start, report, req
            )
            result.message = scanner.error or completion_message(result.tiles_below_quality)
            if result.tiles_below_quality:
                self.get_logger().warning(
                    f"{result.tiles_below_quality} tile(s) below focus quality: "
                    + ", ".join(str(t.index) for t in tiles if t.below_quality)
                )
            if machine.state == "done":
                result.success = True
                handle.succeed()
            elif machine.state == "canceled":
                handle.canceled()
            else:
                handle.abort()
                self.get_logger().error(f"scan failed: {scanner.error}")
            self._publish_status(
                ScanProgress(
                    machine.state,
                    0,
                    result.tiles_total,
                    len(tiles),
                    result.tiles_tissue,
                    result.tiles_skipped,
                    time.monotonic() - start,
                    0.0,
                    result.message,
                )
            )
            return result
        finally:
            self._scan_id = ""
            self._busy.release()

    def _fill_result(
        self, result, tiles: list[TileRecord], sim_s: float, wall_s: float, report, req: ScanRequest
    ) -> None:
        """Counts and paths of the result."""
        result.tiles_total = len(tiles) if report is None else report["tiles_total"]
        result.tiles_tissue = sum(t.has_tissue for t in tiles)
        result.tiles_skipped = sum(not t.has_tissue for t in tiles)
        result.tiles_below_quality = sum(t.below_quality for t in tiles)
        result.wall_time = wall_s
        result.sim_time = sim_s
        result.within_dof_pct = math.nan
        if report is not None:
            result.slide_path = report.get("slide_path", "")
            result.report_path = report.get("report_path", "")
            wd = report.get("within_dof_pct")
            result.within_dof_pct = math.nan if wd is None else float(wd)

    def _publish_status(self, p: ScanProgress) -> ScanStatus:
        msg = ScanStatus(
            scan_id=self._scan_id,
            state=p.state,
            tile_index=p.tile_index,
            tiles_total=p.tiles_total,
            tiles_done=p.tiles_done,
            tiles_tissue=p.tiles_tissue,
            tiles_skipped=p.tiles_skipped,
            elapsed=p.elapsed,
            eta=p.eta,
            message=p.message,
            region_area=p.region_area,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)
        return msg

    def _publish_tile(self, t: TileRecord) -> None:
        msg = ScanTile(
            scan_id=self._scan_id,
            index=t.index,
            row=t.row,
            col=t.col,
            position=point((t.x_m, t.y_m, t.z_m)),
            has_tissue=t.has_tissue,
            tissue_score=t.tissue_score,
            focus_method=t.focus_method,
            predicted_offset=t.predicted_offset_m,
            focus_images=t.focus_images,
            focus_time=t.focus_time_s,
            refocused=t.refocused,
            sharpness=t.sharpness,
            focus_quality=t.focus_quality,
            focus_check=t.focus_check,
            image_path=t.image_path,
            true_focus_error=math.nan if t.true_focus_error_m is None else t.true_focus_error_m,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "stage"
        self._tile_pub.publish(msg)

    # -- focal stack --------------------------------------------------------------------
    def _execute_stack(self, handle) -> AcquireFocalStack.Result:
        """Acquire one focal stack into the dataset format."""
        result = AcquireFocalStack.Result()
        if not self._busy.acquire(blocking=False):
            handle.abort()
            result.message = f"a scan is running ({self._scan_id}); cancel it or wait"
            return result
        try:
            goal = handle.request

            def feedback(done: int, total: int, z: float) -> None:
                handle.publish_feedback(
                    AcquireFocalStack.Feedback(images_done=done, images_total=total, current_z=z)
                )

            try:
                self._scope.check_servers(need_focus=False)
                out = acquire_focal_stack(
                    self._scope,
                    goal,
                    self._scope.limits(),
                    self._profile,
                    self._pixel,
                    self._truth(),
                    feedback,
                    lambda: handle.is_cancel_requested,
                )
            except (ValueError, HardwareError, OSError) as exc:
                handle.abort()
                result.message = str(exc)
                self.get_logger().error(f"focal stack failed: {exc}")
                return result
            if out is None:
                handle.canceled()
                result.message = "canceled on request; the partial stack was removed"
                return result
            result.success = True
            result.stack_dir, result.images = str(out.stack_dir), out.images
            result.best_focus_z, result.best_focus_source = out.best_focus_z, out.source
            result.message = f"wrote {out.images} images to {out.stack_dir}"
            handle.succeed()
            return result
        finally:
            self._busy.release()

    def destroy_node(self) -> None:
        """Release the action servers and clients."""
        self._scan_server.destroy()
        self._stack_server.destroy()
        self._scope.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the planner node until interrupted (exit status 2 on bad configuration)."""
    exit_with(run_node(PlannerNode, args, "planner", threads=6))


if __name__ == "__main__":
    main()
