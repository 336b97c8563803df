import numpy as np

from dp_ros.sim.reach import ReachTask


def test_reset_is_deterministic_and_target_is_away_from_start():
    t = ReachTask()
    t.reset(5)
    a = (t.target_xy, t.agent_xy)
    t.reset(6)
    t.reset(5)
    np.testing.assert_array_equal(t.target_xy, a[0])
    np.testing.assert_array_equal(t.agent_xy, a[1])
    assert t.distance >= t.min_start_distance


def test_moving_onto_target_succeeds_after_hold():
    t = ReachTask(hold_time_s=0.5)
    t.reset(1)
    assert not t.success
    c0 = t.coverage
    for _ in range(5):
        t.step(t.target_xy, 0.1)
    assert t.coverage > c0
    for _ in range(10):  # PD settles within ~0.5 s, then 0.5 s of hold
        t.step(t.target_xy, 0.1)
    assert t.distance < 1.0 and t.success
    # Latched for the episode.
    t.step(t.target_xy + 200, 1.0)
    assert t.success


def test_leaving_before_hold_time_resets_hold():
    t = ReachTask(hold_time_s=0.5, pusher_tracking="kinematic")
    t.set_state(agent_xy=(100, 100), target_xy=(300, 300))
    t.step((300, 300), 0.3)
    assert 0.25 < t.hold_s < 0.35 and not t.success
    t.step((100, 100), 0.1)
    assert t.hold_s == 0.0
    t.step((300, 300), 0.3)
    assert not t.success
    t.step((300, 300), 0.3)
    assert t.success


def test_render():
    t = ReachTask()
    t.set_state(agent_xy=(100, 100), target_xy=(400, 256))
    img = t.render(size=(96, 96))
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    r, g, b = img[48, 75].astype(int)  # target centre at (400, 256) * 96 / 512
    assert r > 180 and g < 100 and b < 100
    assert t.render_full().shape == (512, 512, 3)
