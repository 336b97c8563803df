import numpy as np
import pytest

from dp_ros.core.teleop import TeleopMapper

HOME = np.array([0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0])


def mapper(**kw):
    m = TeleopMapper([0.36, -0.19, 0.02], [0.74, 0.19, 0.40], max_speed_m_s=0.25, **kw)
    m.reset(HOME)
    return m


def test_planar_by_default_moves_in_the_table_plane_at_the_set_speed():
    m = mapper()
    s = m.step([1.0, -1.0, 1.0], [1.0, 0.0, 0.0], (False, False), 0.1)
    assert np.allclose(s.target[:3], [0.575, -0.025, 0.05])      # z locked
    assert np.allclose(s.target[3:], HOME[3:])                  # rotation locked
    assert not s.unlocked


def test_button0_unlocks_height_and_rotation():
    m = mapper()
    s = m.step([0, 0, 1.0], [0, 0, 1.0], (True, False), 0.1)
    assert s.unlocked and s.target[2] == pytest.approx(0.075)
    assert not np.allclose(s.target[3:], HOME[3:])


def test_deadzone_and_noise_give_no_drift():
    m = mapper(deadzone=0.1)
    for _ in range(100):
        s = m.step(np.random.default_rng(0).uniform(-0.09, 0.09, 3), [0, 0, 0], (False, False), 0.1)
    assert np.allclose(s.target, HOME)


def test_target_never_leaves_the_workspace_and_nan_input_is_ignored():
    m = mapper()
    for _ in range(100):
        s = m.step([1.0, 1.0, 0], [0, 0, 0], (False, False), 0.1)
    assert np.allclose(s.target[:2], [0.74, 0.19])
    s = m.step([np.nan, np.inf, 0], [0, 0, 0], (False, False), 0.1)
    assert np.all(np.isfinite(s.target))


def test_button1_rising_edge_toggles_recording_once():
    m = mapper()
    edges = [m.step([0, 0, 0], [0, 0, 0], b, 0.1).toggle_record
             for b in [(False, False), (False, True), (False, True), (False, False), (False, True)]]
    assert edges == [False, True, False, False, True]


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError):
        TeleopMapper([0, 0, 0], [0, 1, 1])
