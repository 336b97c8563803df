import numpy as np

from dp_ros.core.command_check import outside_box, tick_limits

Q = [1.0, 0.0, 0.0, 0.0]


def test_limits_count_missing_ticks_and_restart_at_a_resync():
    period = 0.01
    # 1 mm per tick = 0.1 m/s; tick 3 missing (the command at tick 4 moved 2 mm over 2 ticks)
    ticks = [0, 1, 2, 4, 5]
    poses = [[0.001 * t, 0, 0, *Q] for t in ticks]
    lim = tick_limits(ticks, poses, period)
    assert np.isclose(lim["max_speed"], 0.1) and lim["max_acc"] < 1e-9 and lim["max_ang_speed"] == 0.0
    jumped = poses + [[0.5, 0, 0, *Q], [0.501, 0, 0, *Q]]       # a resync to the measured pose
    lim = tick_limits(ticks + [6, 7], jumped, period, [False] * 5 + [True, False])
    assert np.isclose(lim["max_speed"], 0.1)
    assert tick_limits(ticks + [6, 7], jumped, period)["max_speed"] > 40   # counted as motion otherwise


def test_distance_outside_the_box():
    lo, hi = [0, 0, 0], [1, 1, 1]
    assert outside_box([[0.5, 0.5, 0.5], [1, 0, 0]], lo, hi) == 0.0
    assert np.isclose(outside_box([[1.3, 0.5, -0.4]], lo, hi), 0.5)
