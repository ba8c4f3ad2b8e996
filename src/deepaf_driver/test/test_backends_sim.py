"""The sim backends and the backend registry, without ROS."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from deepaf_driver.backends import create_camera, create_stage
from deepaf_driver.backends.base import BackendError, Limits, backlash_waypoints
from deepaf_driver.backends.sim import SimCamera, SimStage, make_microscope


def test_registry_names_unknown_backends_and_loads_plugins():
    with pytest.raises(ValueError, match="unknown stage backend 'warp'; choose one of sim"):
        create_stage("warp")
    with pytest.raises(ValueError, match="is not a CameraBackend"):
        create_camera("deepaf_driver.backends.sim:SimStage")
    assert isinstance(create_camera("deepaf_driver.backends.sim:SimCamera"), SimCamera)


def test_sim_stage_reports_simulated_time_and_sleeps_a_fraction_of_it():
    stage = SimStage(time_scale=0.1)
    stage.start()
    seen = []
    t0 = time.monotonic()
    result = stage.move((0.0095, 0.0075, 0.0), progress=seen.append)
    wall = time.monotonic() - t0
    assert not result.stopped
    assert result.position == (0.0095, 0.0075, 0.0) == stage.position()
    assert 0.4 < result.duration < 0.6  # 2 mm at 5 mm/s + ramps + settling
    assert 0.5 * 0.1 * result.duration < wall < 0.1 * result.duration + 0.2
    xs = [p[0] for p in seen]
    assert xs == sorted(xs) and len(xs) >= 2


def test_sim_stage_stops_part_way_at_a_consistent_pose():
    stage = SimStage(time_scale=1.0)
    stage.start()
    halt_at = time.monotonic() + 0.3
    result = stage.move((0.0145, 0.0075, 0.0), stop_requested=lambda: time.monotonic() > halt_at)
    assert result.stopped
    assert 0.0075 < result.position[0] < 0.0145
    assert result.position == stage.position()
    assert 0 < result.duration < 1.0


def test_sim_stage_halt_from_another_thread():
    stage = SimStage(time_scale=1.0)
    stage.start()
    threading.Timer(0.2, stage.halt).start()
    assert stage.move((0.001, 0.0075, 0.0)).stopped


def test_sim_stage_refuses_targets_outside_its_travel():
    stage = SimStage(time_scale=0.0)
    stage.start()
    with pytest.raises(BackendError, match="outside its limits"):
        stage.move((0.02, 0.0075, 0.0))
    assert stage.limits().x == (0.0, 0.015)
    assert stage.home() == (0.0075, 0.0075, 0.0)


def test_sim_stage_is_absolute_estimates_move_times_and_has_optional_endstops():
    stage = SimStage(time_scale=0.5)
    stage.start()
    assert stage.absolute and stage.counter_session() == SimStage().counter_session()
    assert not stage.has_endstops()
    with pytest.raises(BackendError, match="no endstops"):
        stage.seek_endstops()
    expected = stage.move_time(stage.position(), (0.0095, 0.0075, 0.0))
    assert expected == pytest.approx(0.5 * stage.move((0.0095, 0.0075, 0.0)).duration)
    assert stage.move_time(stage.position(), (0.02, 0.0075, 0.0)) is None  # outside travel
    homing = SimStage(time_scale=0.0, endstops=True)
    homing.start()
    assert homing.has_endstops()
    assert homing.seek_endstops() == (0.0, 0.0, 500e-6) == homing.position()


def test_sim_stage_stall_fault_never_finishes_until_stopped():
    stage = SimStage(time_scale=0.0, fault="stall")
    stage.start()
    halt_at = time.monotonic() + 0.3
    result = stage.move((0.0095, 0.0075, 0.0), stop_requested=lambda: time.monotonic() > halt_at)
    assert result.stopped and time.monotonic() >= halt_at
    assert result.position == pytest.approx((0.0085, 0.0075, 0.0))  # stalled half way
    assert not stage.move(stage.position()).stopped  # a move to where it is still ends
    with pytest.raises(ValueError, match="unknown sim stage fault"):
        SimStage(fault="melt")


def test_sim_camera_renders_the_pose_it_is_given_and_caches_noise_free_captures():
    cam = SimCamera((64, 36), (128, 96), noise=False)
    cam.start()
    scope = make_microscope("4x", "lab_a_standard", 0, (64, 36), (128, 96))
    x, y = scope.random_tissue_position(np.random.default_rng(0))
    pose = (x, y, float(scope.best_focus_z(x, y)))
    frame = cam.capture(pose, timeout=10)
    np.testing.assert_array_equal(frame.image, scope.capture(*pose, noise=False))
    assert frame.exposure_time > 0 and cam.last_render_time > 0
    assert cam.capture(pose, timeout=10).image is frame.image and cam.last_render_time == 0
    assert cam.preview(pose).shape == (36, 64, 3)
    unknown = cam.preview((math.nan, math.nan, math.nan))  # before joint_states: start pose
    np.testing.assert_array_equal(unknown, scope.preview(*scope.stage.position, noise=False))


def test_sim_camera_hang_fault_is_released_by_stop():
    cam = SimCamera((64, 36), (128, 96), fault="hang_capture")
    cam.start()
    threading.Timer(0.2, cam.stop).start()
    with pytest.raises(BackendError, match="hung"):
        cam.capture((0.0075, 0.0075, 0.0), timeout=1)


def test_backlash_waypoints_approach_from_below_and_respect_the_lower_limit():
    up = backlash_waypoints((0, 0, 0), (1e-3, 0, 5e-6), (1e-5, 1e-5, 2e-6))
    assert up == [(1e-3, 0, 5e-6)]
    down = backlash_waypoints((1e-3, 0, 5e-6), (0.5e-3, 0, 1e-6), (1e-5, 1e-5, 2e-6))
    assert down == [(0.5e-3 - 1e-5, 0, 1e-6 - 2e-6), (0.5e-3, 0, 1e-6)]
    clamped = backlash_waypoints((0, 0, 5e-6), (0, 0, -99e-6), (0, 0, 2e-6), (0, 0, -100e-6))
    assert clamped == [(0, 0, -100e-6), (0, 0, -99e-6)]


def test_limits_explain_violations_and_intersect():
    limits = Limits((0.0, 0.01), (0.0, 0.01), (-1e-4, 1e-4))
    assert limits.violation((0.005, 0.005, 0.0)) == ""
    assert "focus_z target -0.2000 mm is outside" in limits.violation((0.005, 0.005, -2e-4))
    assert "not a finite" in limits.violation((math.nan, 0.0, 0.0))
    both = limits.intersect(Limits((0.002, 0.02), (0.0, 0.01), (-1.0, 0.0)))
    assert both.axes() == ((0.002, 0.01), (0.0, 0.01), (-1e-4, 0.0))
