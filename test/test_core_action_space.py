import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.core.action_space import ActionSpace

DOWN = np.array([0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0])


def test_xy_keeps_fixed_z_and_orientation():
    s = ActionSpace("xy", DOWN)
    assert s.dim == 2
    pose = s.to_pose([0.4, -0.1])
    assert np.allclose(pose, [0.4, -0.1, 0.05, 1, 0, 0, 0])
    assert np.allclose(s.from_pose(pose), [0.4, -0.1])
    batch = s.to_pose(np.zeros((16, 2)))
    assert batch.shape == (16, 7) and np.allclose(batch[:, 2:], DOWN[2:])


def test_xyz_and_rotvec_roundtrip():
    rng = np.random.default_rng(0)
    s3 = ActionSpace("xyz", DOWN)
    a = rng.normal(size=3)
    assert np.allclose(s3.from_pose(s3.to_pose(a)), a)
    s6 = ActionSpace("xyz_rotvec", None)
    assert s6.dim == 6
    a6 = np.concatenate([rng.normal(size=(5, 3)), Rotation.random(5, random_state=rng).as_rotvec()], axis=1)
    poses = s6.to_pose(a6)
    assert poses.shape == (5, 7)
    assert np.allclose(s6.from_pose(poses), a6)


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf], [0.0, -np.inf]])
def test_rejects_non_finite(bad):
    with pytest.raises(ValueError):
        ActionSpace("xy", DOWN).to_pose(bad)


def test_rejects_bad_config_and_shapes():
    with pytest.raises(ValueError):
        ActionSpace("joint", DOWN)
    with pytest.raises(ValueError):
        ActionSpace("xy", None)
    with pytest.raises(ValueError):
        ActionSpace("xy", [0, 0, 0, np.nan, 0, 0, 1])
    with pytest.raises(ValueError):
        ActionSpace("xy", DOWN).to_pose([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        ActionSpace("xyz", DOWN).from_pose([0, 0, np.nan, 0, 0, 0, 1])
