import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.sim import ur5_kinematics as kin
from dp_ros.sim.world import TOOL_DOWN_QUAT, SimUR5, SimWorld, TaskPlaneMapping


def pose(x, y, z, quat=TOOL_DOWN_QUAT):
    return np.concatenate([[x, y, z], quat])


def test_mapping_round_trip_and_orientation():
    m = TaskPlaneMapping((0.3, -0.2), (0.7, 0.2), 512)
    np.testing.assert_allclose(m.to_task([0.3, 0.2]), [0, 0])
    np.testing.assert_allclose(m.to_task([0.7, -0.2]), [512, 512])
    xy = np.random.default_rng(0).uniform([0.3, -0.2], [0.7, 0.2], (50, 2))
    np.testing.assert_allclose(m.to_robot(m.to_task(xy)), xy, atol=1e-12)
    t = np.random.default_rng(1).uniform(0, 512, (50, 2))
    np.testing.assert_allclose(m.to_task(m.to_robot(t)), t, atol=1e-9)
    assert m.contains([0.5, 0.0]) and not m.contains([0.8, 0.0])


def test_ur5_ik_inverts_fk():
    rng = np.random.default_rng(0)
    for _ in range(100):
        q = rng.uniform(-np.pi, np.pi, 6)
        T = kin.fk(q)
        sols = kin.ik(T)
        assert len(sols) > 0
        for s in sols:
            np.testing.assert_allclose(kin.fk(s), T, atol=1e-8)
        assert min(np.abs((s - q + np.pi) % (2 * np.pi) - np.pi).max() for s in sols) < 1e-6


def test_sim_ur5_tracks_with_bounded_speed():
    r = SimUR5(pose(0.5, 0.0, 0.1), max_speed=0.25, time_constant_s=0.05)
    r.servo(pose(0.6, 0.1, 0.15))
    dt, prev, speeds = 0.008, r.tcp_pose(), []
    for _ in range(250):
        r.step(dt)
        cur = r.tcp_pose()
        speeds.append(np.linalg.norm(cur[:3] - prev[:3]) / dt)
        prev = cur
    assert max(speeds) <= 0.25 + 1e-9
    assert max(speeds) > 0.2  # it was speed limited, not just slow
    np.testing.assert_allclose(r.tcp_pose()[:3], [0.6, 0.1, 0.15], atol=1e-4)


def test_sim_ur5_rotation_bounded_and_joints_match_fk():
    r = SimUR5(pose(0.5, 0.0, 0.1), max_angular_speed=1.0)
    target_q = (Rotation.from_euler("z", 0.5) * Rotation.from_quat(TOOL_DOWN_QUAT)).as_quat()
    r.servo(pose(0.5, 0.0, 0.1, target_q))
    q_prev = r.joint_positions()
    for _ in range(100):
        before = Rotation.from_quat(r.tcp_pose()[3:])
        r.step(0.01)
        after = Rotation.from_quat(r.tcp_pose()[3:])
        assert (after * before.inv()).magnitude() <= 0.01 + 1e-9
        q = r.joint_positions()
        assert np.abs(q - q_prev).max() < 0.05  # continuous branch
        q_prev = q
        T = kin.fk(q)
        np.testing.assert_allclose(T[:3, 3], r.tcp_pose()[:3], atol=1e-9)
        np.testing.assert_allclose(T[:3, :3], after.as_matrix(), atol=1e-9)
    assert (Rotation.from_quat(r.tcp_pose()[3:]) * Rotation.from_quat(target_q).inv()).magnitude() < 1e-3
    r.stop()
    held = r.tcp_pose()
    r.step(0.5)
    np.testing.assert_allclose(r.tcp_pose(), held)


@pytest.fixture(scope="module")
def world():
    return SimWorld("pusht", camera_names=("top", "wrist"), image_size=(96, 96), seed=0)


def test_world_step_couples_tcp_to_pusher(world):
    world.reset(2)
    m = world.mapping
    np.testing.assert_allclose(world.task.agent_xy, m.to_task(world.tcp_pose()[:2]), atol=1e-6)
    start = world.tcp_pose()
    target = start.copy()
    target[:2] = [0.45, 0.05]
    world.servo(target)
    for _ in range(30):
        world.step(0.1)
        np.testing.assert_allclose(world.task.agent_xy, m.to_task(world.tcp_pose()[:2]), atol=1e-6)
    np.testing.assert_allclose(world.tcp_pose()[:2], [0.45, 0.05], atol=1e-4)
    s = world.task_state()
    assert s["task"] == "pusht" and s["episode_time_s"] == pytest.approx(3.0)
    assert 0.0 <= s["coverage"] <= s["max_coverage"] <= 1.0
    assert len(s["block_pose"]) == 3 and world.joints().shape == (6,)


def test_world_reset_deterministic_and_cameras(world):
    world.reset(11)
    s1, img1 = world.task_state(), world.render("top")
    world.reset(12)
    world.reset(11)
    assert world.task_state() == s1
    np.testing.assert_array_equal(world.render("top"), img1)
    assert img1.shape == (96, 96, 3) and img1.dtype == np.uint8
    wrist = world.render("wrist")
    assert wrist.shape == (96, 96, 3) and not np.array_equal(wrist, img1)
    with pytest.raises(KeyError):
        world.render("side")


def test_world_pushes_block_through_robot():
    w = SimWorld("pusht", seed=0)
    w.reset(0)
    w.task.set_state(w.task.agent_xy, (256, 300, 0.0))
    m = w.mapping
    # Teleport the TCP above the bar, then servo down (task +y) through it.
    w.robot.reset(pose(*m.to_robot([256, 240]), 0.1))
    w.task.set_state(m.to_task(w.tcp_pose()[:2]), (256, 300, 0.0))
    before = w.task.block_pose.copy()
    w.servo(pose(*m.to_robot([256, 360]), 0.1))
    for _ in range(20):
        w.step(0.1)
    assert w.task.block_pose[1] - before[1] > 10.0


def test_reach_world_success_by_servoing_to_target():
    w = SimWorld("reach", seed=3)
    s = w.reset(3)
    assert not s["success"]
    w.servo(pose(*s["target_xy_m"], 0.1))
    for _ in range(40):
        w.step(0.1)
    s = w.task_state()
    assert s["success"] and s["coverage"] > 0.99


@pytest.mark.parametrize("task", ["pusht", "reach"])
def test_home_pose_reset(task):
    home = pose(0.5, 0.05, 0.05)
    w = SimWorld(task, home_pose=home, seed=0)
    for seed in (1, 2):
        w.reset(seed)
        np.testing.assert_allclose(w.tcp_pose(), home)
        np.testing.assert_allclose(w.task.agent_xy, w.mapping.to_task(home[:2]), atol=1e-9)
    if task == "reach":
        assert w.task.distance >= w.task.min_start_distance
