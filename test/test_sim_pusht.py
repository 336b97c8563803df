import numpy as np
import pytest

from dp_ros.sim.pusht import PushTTask


@pytest.fixture(scope="module")
def task():
    return PushTTask()


def test_reset_is_deterministic_per_seed(task):
    task.reset(3)
    a = (task.block_pose.copy(), task.agent_xy.copy())
    task.reset(4)
    b = (task.block_pose.copy(), task.agent_xy.copy())
    task.reset(3)
    np.testing.assert_array_equal(task.block_pose, a[0])
    np.testing.assert_array_equal(task.agent_xy, a[1])
    assert not np.allclose(a[0], b[0])


def test_same_seed_same_actions_same_trajectory():
    runs = []
    for _ in range(2):
        t = PushTTask()
        t.reset(7)
        rng = np.random.default_rng(0)
        for _ in range(20):
            t.step(rng.uniform(50, 450, 2), 0.1)
        runs.append((t.block_pose, t.agent_xy))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_pushing_the_block_moves_it(task):
    # T with angle 0 at (256, 300): its bar spans y 300..330; push down onto the bar's top edge.
    task.set_state((256, 240), (256, 300, 0.0))
    before = task.block_pose.copy()
    for _ in range(10):
        task.step((256, 340), 0.1)
    after = task.block_pose
    assert after[1] - before[1] > 10.0
    assert task.agent_xy[1] > 280


def test_coverage_in_unit_interval(task):
    task.reset(0)
    rng = np.random.default_rng(1)
    for _ in range(10):
        task.step(rng.uniform(0, 512, 2), 0.1)
        assert 0.0 <= task.coverage <= 1.0


def test_perfect_placement_succeeds(task):
    task.set_state((60, 60), task.goal_pose)
    np.testing.assert_allclose(task.block_pose, task.goal_pose, atol=1e-9)
    assert task.coverage > 0.999
    assert task.success
    task.set_state((60, 60), task.goal_pose + np.array([40.0, 0.0, 0.0]))
    assert task.coverage < 0.95 and not task.success


def test_render_shape_dtype_and_content(task):
    task.set_state((60, 60), (400, 420, 0.0))
    img = task.render(size=(96, 96))
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert task.render(size=(64, 80)).shape == (64, 80, 3)
    full = task.render_full()
    assert full.shape == (512, 512, 3)
    # The goal (LightGreen 144, 238, 144) is drawn around (256, 256).
    np.testing.assert_array_equal(full[256, 256], [144, 238, 144])


def test_pd_and_kinematic_tracking():
    t = PushTTask(pusher_tracking="kinematic")
    t.set_state((100, 100), (400, 400, 0.0))
    t.step((120, 110), 0.01)
    np.testing.assert_allclose(t.agent_xy, [120, 110], atol=1e-9)
    t = PushTTask(pusher_tracking="pd")
    t.set_state((100, 100), (400, 400, 0.0))
    t.step((120, 110), 0.01)
    assert np.linalg.norm(t.agent_xy - [100, 100]) < 1.0  # PD lags: one substep barely moves
    t.step((120, 110), 2.0)
    np.testing.assert_allclose(t.agent_xy, [120, 110], atol=0.5)
