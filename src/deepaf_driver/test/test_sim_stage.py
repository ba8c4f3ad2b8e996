"""Simulated stage: limits, move timing, z step, backlash."""

import pytest
from deepaf_driver.sim import AxisDynamics, SimStage, StageLimits


def test_limits_reject_and_keep_position():
    s = SimStage(StageLimits(), position=(1e-3, 1e-3, 0.0))
    with pytest.raises(ValueError, match="x="):
        s.move_to(x=16e-3)
    with pytest.raises(ValueError, match="z="):
        s.move_to(z=-1e-3)
    assert s.position == (1e-3, 1e-3, 0.0)
    assert s.clock_s == 0.0


def test_trapezoid_and_triangle_timing():
    ax = AxisDynamics(max_speed_m_s=1e-3, accel_m_s2=10e-3, settle_s=0.05)
    # long move: d / v + v / a + settle
    assert ax.move_time_s(5e-3) == pytest.approx(5 + 0.1 + 0.05)
    # short move: triangular 2 sqrt(d / a) + settle
    assert ax.move_time_s(1e-6) == pytest.approx(2 * (1e-6 / 10e-3) ** 0.5 + 0.05)
    assert ax.move_time_s(0.0) == 0.0


def test_moves_report_duration_and_clock():
    s = SimStage(position=(5e-3, 5e-3, 0.0))
    t1 = s.move_to(x=6e-3, y=5.5e-3)
    t2 = s.move_by(dz=3e-6)
    assert t1 > 0 and t2 > 0
    assert s.clock_s == pytest.approx(t1 + t2)
    s.wait(0.5)
    assert s.clock_s == pytest.approx(t1 + t2 + 0.5)


def test_z_step_quantizes():
    s = SimStage(z_step_m=2e-6, position=(5e-3, 5e-3, 0.0))
    s.move_to(z=4.9e-6)
    assert s.position[2] == pytest.approx(4e-6)


def test_backlash_compensated_and_not():
    comp = SimStage(backlash_m=3e-6, compensate_backlash=True, position=(5e-3, 5e-3, 0.0))
    comp.move_to(z=10e-6)
    t_down = comp.move_to(z=5e-6)
    assert comp.actual_z_m == pytest.approx(5e-6)
    raw = SimStage(backlash_m=3e-6, compensate_backlash=False, position=(5e-3, 5e-3, 0.0))
    raw.move_to(z=10e-6)
    t_raw = raw.move_to(z=5e-6)
    assert raw.actual_z_m == pytest.approx(8e-6)  # carriage lags by the backlash
    raw.move_to(z=9e-6)
    assert raw.actual_z_m == pytest.approx(9e-6)
    assert t_down > t_raw  # compensation costs travel time
