"""The timing model shared by deployment and conversion (core/timing.py)."""

import numpy as np

from dp_ros.core import timing
from dp_ros.core.obs_buffer import ObservationBuffer

MS = 1_000_000


def test_grids():
    np.testing.assert_array_equal(timing.observation_times(1000 * MS, 3, 100 * MS), [800 * MS, 900 * MS, 1000 * MS])
    np.testing.assert_array_equal(timing.step_times(800 * MS, 4, 100 * MS), [800 * MS, 900 * MS, 1000 * MS, 1100 * MS])
    # a chunk's index To-1 is the newest observation's time
    obs = timing.observation_times(1000 * MS, 2, 100 * MS)
    assert timing.step_times(obs[0], 16, 100 * MS)[1] == obs[-1]


def test_nearest_prefers_the_earlier_frame_on_a_tie_and_reports_the_distance():
    times = np.array([0, 100, 200]) * MS
    idx, off = timing.nearest(times, np.array([-30, 50, 149, 151, 260]) * MS)
    np.testing.assert_array_equal(idx, [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(off, np.array([30, 50, 49, 49, 60]) * MS)
    idx, off = timing.nearest(np.array([70 * MS]), np.array([0, 70 * MS]))   # one sample
    np.testing.assert_array_equal(idx, [0, 0])


def test_bracket_interpolates_inside_and_holds_the_ends():
    times = np.array([0, 100, 300]) * MS
    lo, hi, w, span = timing.bracket(times, np.array([-10, 0, 50, 100, 250, 300, 340]) * MS)
    np.testing.assert_array_equal(lo, [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(hi, [0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_allclose(w, [0, 0, 0.5, 0, 0.75, 0, 0])
    np.testing.assert_array_equal(span, np.array([0, 100, 100, 200, 200, 0, 0]) * MS)


def test_the_observation_buffer_applies_the_shared_tolerances():
    dt_s = 0.1
    buf = ObservationBuffer(["top"], {"tcp_pose": 7}, 2, dt_s)
    assert buf.match_limit_ns == timing.frame_match_limit_ns(timing.step_ns(dt_s)) == 60 * MS
    assert buf.max_state_gap_ns == timing.state_gap_limit_ns(timing.step_ns(dt_s)) == 200 * MS
