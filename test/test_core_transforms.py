import ast
import pathlib

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.core import transforms as tf

CORE = pathlib.Path(__file__).resolve().parents[1] / "dp_ros" / "core"


def test_core_never_imports_rclpy():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "rclpy" for n in names), path


def test_normalize_and_validation():
    q = tf.normalize_quat([0, 0, 0, 2.0])
    assert np.allclose(q, [0, 0, 0, 1])
    for bad in ([0, 0, 0, 0], [np.nan, 0, 0, 1], [np.inf, 0, 0, 1]):
        with pytest.raises(ValueError):
            tf.normalize_quat(bad)
    with pytest.raises(ValueError):
        tf.as_pose([0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError):
        tf.as_pose([0, 0, np.nan, 0, 0, 0, 1])


def test_pose_rot_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = Rotation.random(random_state=rng)
        pos = rng.normal(size=3)
        pose = tf.pos_rot_to_pose(pos, r)
        p2, r2 = tf.pose_to_pos_rot(pose)
        assert np.allclose(p2, pos)
        assert tf.rot_angle(r, r2) < 1e-9
        v6 = tf.pose_to_pos_rotvec(pose)
        back = tf.pos_rotvec_to_pose(v6)
        assert np.allclose(back[:3], pos) and tf.quat_angle(back[3:], pose[3:]) < 1e-9


def test_slerp_matches_scipy_and_takes_short_path():
    rng = np.random.default_rng(1)
    for _ in range(50):
        r0, r1 = Rotation.random(2, random_state=rng)
        w = rng.uniform()
        q = tf.quat_slerp(r0.as_quat(), -r1.as_quat(), w)     # sign of q1 must not matter
        ang01 = tf.rot_angle(r0, r1)
        assert tf.quat_angle(r0.as_quat(), q) == pytest.approx(w * ang01, abs=1e-9)
        assert tf.quat_angle(q, r1.as_quat()) == pytest.approx((1 - w) * ang01, abs=1e-9)
    # vectorised over weights
    q = tf.quat_slerp([0, 0, 0, 1], Rotation.from_euler("z", 1.0).as_quat(), np.linspace(0, 1, 5))
    assert np.allclose(Rotation.from_quat(q).as_euler("xyz")[:, 2], np.linspace(0, 1, 5))


def test_angle_is_accurate_near_zero_and_pi():
    q0 = [0, 0, 0, 1.0]
    assert tf.quat_angle(q0, Rotation.from_rotvec([1e-8, 0, 0]).as_quat()) == pytest.approx(1e-8, rel=1e-6)
    assert tf.quat_angle(q0, [1, 0, 0, 0]) == pytest.approx(np.pi)
    assert tf.quat_angle([1, 0, 0, 0], [-1, 0, 0, 0]) == pytest.approx(0.0)


def test_continuous_quats():
    rng = np.random.default_rng(2)
    q = Rotation.random(30, random_state=rng).as_quat()
    q *= rng.choice([-1.0, 1.0], size=(30, 1))
    c = tf.continuous_quats(q)
    assert np.all(np.sum(c[1:] * c[:-1], axis=1) >= 0)
    assert np.allclose(np.abs(np.sum(c * q, axis=1)), 1.0)   # same rotations
