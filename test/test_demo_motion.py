"""DemoMotion: the demonstrations' top speed and sharpest turn, and a sampled chunk held to them
where its free steps leave the committed path (dp_ros.policy.demo_motion)."""

import numpy as np
import pytest

from dp_ros.policy.demo_motion import DemoMotion

LIMITS = DemoMotion(step_max=0.02, turn_max=0.03, position_dims=2)


def _steps(path):
    return np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1)


def _turns(path):
    return np.linalg.norm(np.diff(path[:, :2], n=2, axis=0), axis=1)


def test_limits_come_from_steps_inside_episodes_only():
    # episode 1 moves 1 cm per step in x, then stops; episode 2 starts 5 m away (not a step) and
    # turns once by 2 cm (x to y at 1 cm per step); the third dim is not a position
    ep1 = np.array([[0.00, 0, 9], [0.01, 0, -9], [0.02, 0, 9], [0.02, 0, 9]])
    ep2 = np.array([[5.00, 0, 0], [5.01, 0, 0], [5.01, 0.01, 0]])
    motion = DemoMotion.from_actions(np.concatenate([ep1, ep2]), [4, 7], position_dims=2)
    assert motion.step_max == pytest.approx(0.01)
    assert motion.turn_max == pytest.approx(np.hypot(0.01, 0.01))
    assert DemoMotion.from_dict(motion.to_dict()) == motion


def test_bad_limits_and_records_are_refused():
    for bad in ({"step_max": 0.0, "turn_max": 0.1, "position_dims": 2},
                {"step_max": float("nan"), "turn_max": 0.1, "position_dims": 2},
                {"step_max": 0.1, "turn_max": 0.1, "position_dims": 0},
                {"step_max": 0.1}, {"step_max": "fast", "turn_max": 0.1, "position_dims": 2}):
        with pytest.raises(ValueError, match="demo_motion|demo motion"):
            DemoMotion.from_dict(bad)
    with pytest.raises(ValueError, match="3 steps"):
        DemoMotion.from_actions(np.zeros((4, 2)), [2, 4], position_dims=2)


def test_a_path_inside_the_limits_comes_out_unchanged_bit_for_bit():
    rng = np.random.default_rng(0)
    t = np.arange(16) * 0.1
    path = np.stack([0.1 * np.sin(t), 0.1 * np.cos(t), rng.normal(size=16)], axis=1)   # 1 cm per step
    assert _steps(path).max() < LIMITS.step_max and _turns(path).max() < LIMITS.turn_max
    np.testing.assert_array_equal(LIMITS.follow(path, first=5), path)


def test_a_jump_where_the_free_steps_begin_is_followed_at_top_speed_within_the_sharpest_turn():
    """The committed part (indices 0..4) heads -x at 1.5 cm per step; the sample's free part jumps
    6 cm the other way and then stands still (what the Push-T network did at 300 ms). Held to the
    limits, the committed part and the non-position dim are kept, no step is longer than step_max,
    no turn sharper than turn_max, and the path reaches the sample's waypoint and stays on it."""
    committed = np.outer(-0.015 * np.arange(5), [1.0, 0.0])
    free = np.tile(committed[-1] + [0.06, 0.0], (11, 1))
    sample = np.concatenate([committed, free])
    sample = np.concatenate([sample, np.linspace(0, 1, 16)[:, None]], axis=1)
    assert _steps(sample).max() > 2.5 * LIMITS.step_max

    held = LIMITS.follow(sample, first=5)
    np.testing.assert_array_equal(held[:5], sample[:5])
    np.testing.assert_array_equal(held[:, 2], sample[:, 2])
    assert _steps(held).max() <= LIMITS.step_max + 1e-12
    assert _turns(held).max() <= LIMITS.turn_max + 1e-12
    np.testing.assert_allclose(held[-3:, :2], sample[-3:, :2], atol=1e-12)


def test_first_free_index_below_two_starts_where_a_step_is_known():
    sample = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    held = DemoMotion(0.5, 0.5, 2).follow(sample, first=0)
    np.testing.assert_array_equal(held[:2], sample[:2])
    assert _steps(held).max() <= 0.5 + 1e-12
