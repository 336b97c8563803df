"""ReplayBuffer: layout, config guard, lazy access, recovery from an interrupted append."""

import numpy as np
import pytest
import zarr

from dp_ros.data.replay_buffer import ConfigMismatch, ReplayBuffer

CONFIG = {"frequency": 10.0, "dt": 0.1, "cameras": {"top": "/camera/top/image_raw"},
          "image_size": [8, 12], "obs": {"robot_pose": "tcp_xy"}, "action_space": "xy",
          "fixed_pose": [0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0]}


def episode(T, offset=0.0):
    return {"top": np.full((T, 8, 12, 3), int(offset) % 256, np.uint8),
            "robot_pose": np.arange(T * 2, dtype=np.float64).reshape(T, 2) + offset,
            "action": np.ones((T, 2)) * offset,
            "timestamp": 1.7e9 + np.arange(T) * 0.1}


def test_layout_and_lazy_access(tmp_path):
    path = tmp_path / "d.zarr"
    buf = ReplayBuffer.create_or_open(path, CONFIG)
    assert buf.n_episodes == 0 and buf.n_steps == 0 and buf.keys == []
    assert buf.add_episode(episode(5, 1), name="a", info={"source": "/x/a"}) == 0
    assert buf.add_episode(episode(7, 2), name="b") == 1
    assert buf.n_episodes == 2 and buf.n_steps == 12
    np.testing.assert_array_equal(buf.episode_ends, [5, 12])
    assert buf.episode_ends.dtype == np.int64
    assert buf.episode_slice(1) == slice(5, 12) and buf.episode_slice(-1) == slice(5, 12)
    with pytest.raises(IndexError):
        buf.episode_slice(2)
    assert buf.episode_names == ["a", "b"]
    assert buf.episodes[0] == {"source": "/x/a", "name": "a", "length": 5}

    # the reference layout, readable with plain zarr
    root = zarr.open_group(str(path), mode="r")
    assert sorted(root["data"].array_keys()) == ["action", "robot_pose", "timestamp", "top"]
    assert root["data/top"].dtype == np.uint8 and root["data/top"].shape == (12, 8, 12, 3)
    assert root["data/top"].chunks == (4, 8, 12, 3)          # a few frames per chunk
    assert "zstd" in repr(root["data/top"].compressors)
    assert root["data/action"].dtype == np.float32 and root["data/robot_pose"].dtype == np.float32
    assert root["data/timestamp"].dtype == np.float64
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [5, 12])
    assert root.attrs["config"]["image_size"] == [8, 12]

    ro = ReplayBuffer.open(path)
    assert isinstance(ro["top"], zarr.Array)                   # lazy: nothing loaded yet
    np.testing.assert_array_equal(ro["robot_pose"][5:7], episode(7, 2)["robot_pose"][:2])
    ep = ro.get_episode(1)
    assert ep["top"].shape == (7, 8, 12, 3) and np.all(ep["top"] == 2)
    with pytest.raises(PermissionError):
        ro.add_episode(episode(3), name="c")


def test_config_and_episode_checks(tmp_path):
    path = tmp_path / "d.zarr"
    buf = ReplayBuffer.create_or_open(path, CONFIG)
    buf.add_episode(episode(4), name="a")
    with pytest.raises(ConfigMismatch, match="action_space: store has 'xy', requested 'xyz'"):
        ReplayBuffer.create_or_open(path, dict(CONFIG, action_space="xyz"))
    with pytest.raises(ConfigMismatch, match="image_size"):
        ReplayBuffer.create_or_open(path, dict(CONFIG, image_size=(96, 96)))
    same = ReplayBuffer.create_or_open(path, dict(CONFIG, image_size=(8, 12)))   # tuple == list
    assert same.n_episodes == 1
    with pytest.raises(ValueError, match="already"):
        buf.add_episode(episode(4), name="a")
    bad = episode(4)
    bad["top"] = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="camera 'top' frames"):
        buf.add_episode(bad, name="c")
    bad = episode(4)
    bad["action"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="action"):
        buf.add_episode(bad, name="c")
    bad = episode(4)
    del bad["robot_pose"]
    with pytest.raises(ValueError, match="keys"):
        buf.add_episode(bad, name="c")
    bad = episode(4)
    bad["action"] = bad["action"][:3]
    with pytest.raises(ValueError, match="differ in length"):
        buf.add_episode(bad, name="c")
    bad = episode(4)
    bad["action"][2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        buf.add_episode(bad, name="c")
    assert ReplayBuffer.open(path).n_steps == 4                 # nothing half-written
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.create_or_open(tmp_path / "none.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        ReplayBuffer.create_or_open(tmp_path / "junk", CONFIG)


def test_interrupted_append_is_rolled_back(tmp_path):
    path = tmp_path / "d.zarr"
    buf = ReplayBuffer.create_or_open(path, CONFIG)
    buf.add_episode(episode(5, 1), name="a")
    # simulate a crash after the data rows and episode_ends were written, before the commit
    root = zarr.open_group(str(path), mode="r+")
    for key in root["data"].array_keys():
        arr = root["data"][key]
        arr.resize((9,) + arr.shape[1:])
    root["meta/episode_ends"].resize((2,))
    root["meta/episode_ends"][1] = 9
    ro = ReplayBuffer.open(path)                 # readers ignore the uncommitted episode
    assert ro.n_episodes == 1 and ro.n_steps == 5
    buf = ReplayBuffer.create_or_open(path, CONFIG)
    assert buf["action"].shape[0] == 5 and buf.n_episodes == 1
    buf.add_episode(episode(3, 7), name="b")
    np.testing.assert_array_equal(buf.episode_ends, [5, 8])
    np.testing.assert_array_equal(buf.get_episode(1)["action"], np.full((3, 2), 7.0))
