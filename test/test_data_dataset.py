"""SequenceDataset windows: shapes, edge padding, episode boundaries, stats, workers."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dp_ros.data.dataset import SequenceDataset, create_indices, train_val_split
from dp_ros.data.replay_buffer import ReplayBuffer

LENGTHS = [12, 5, 20, 3]
H, W = 8, 10
CONFIG = {"cameras": {"top": "/t"}, "image_size": [H, W], "obs": {"robot_pose": "tcp_xy"},
          "action_space": "xy"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Every value encodes its global row r: action = (r, -r), pose = (10r, 10r+1), image = r."""
    path = tmp_path_factory.mktemp("ds") / "d.zarr"
    buf = ReplayBuffer.create_or_open(path, CONFIG)
    r0 = 0
    for i, T in enumerate(LENGTHS):
        r = np.arange(r0, r0 + T)
        buf.add_episode({
            "top": np.broadcast_to(r[:, None, None, None], (T, H, W, 3)).astype(np.uint8),
            "robot_pose": np.stack([10.0 * r, 10.0 * r + 1], 1),
            "action": np.stack([r, -r], 1).astype(np.float64),
            "timestamp": r * 0.1}, name=f"ep{i}")
        r0 += T
    return path


def make(store, To=2, Tp=8, Ta=4, **kw):
    return SequenceDataset(store, obs_horizon=To, pred_horizon=Tp, action_horizon=Ta,
                           camera_keys=["top"], lowdim_keys=["robot_pose"], **kw)


def rows_of(item):
    return item["action"][:, 0].numpy().astype(int)


def test_windows_shapes_and_padding(store):
    To, Tp, Ta = 2, 8, 4
    ds = make(store, To, Tp, Ta)
    # reference count: per episode L - Tp + (To-1) + (Ta-1) + 1 windows, at least 0
    assert len(ds) == sum(max(0, L - Tp + To - 1 + Ta - 1 + 1) for L in LENGTHS)
    item = ds[0]
    assert item["obs"]["top"].shape == (To, 3, H, W) and item["obs"]["top"].dtype == torch.float32
    assert item["obs"]["robot_pose"].shape == (To, 2)
    assert item["action"].shape == (Tp, 2) and item["action"].dtype == torch.float32

    ends = np.cumsum(LENGTHS)
    starts = ends - LENGTHS
    seen_first = {}
    for i in range(len(ds)):
        it = ds[i]
        rows = rows_of(it)
        ep = int(np.searchsorted(ends, rows[0], side="right"))
        # never crosses an episode boundary
        assert starts[ep] <= rows.min() and rows.max() < ends[ep]
        # consecutive, except repeated edge rows
        assert np.all(np.diff(rows) >= 0) and np.all(np.diff(rows) <= 1)
        np.testing.assert_array_equal(it["action"][:, 1].numpy(), -rows)
        # observations are the window's first To steps, every key on the same rows
        obs_rows = rows[:To]
        np.testing.assert_allclose(it["obs"]["robot_pose"][:, 0].numpy(), 10.0 * obs_rows)
        for k, r in enumerate(obs_rows):
            assert torch.all(it["obs"]["top"][k] == r / 255.0)
        seen_first.setdefault(ep, rows)
    # first window of an episode: pad_before = To-1 copies of the first step
    r = seen_first[0]
    assert list(r[:To]) == [0] * To and r[To - 1 + 1] == 1
    assert list(seen_first[2][:2]) == [starts[2], starts[2]]
    # last window of an episode: pad_after = Ta-1 copies of the last step
    last_of_ep2 = [rows_of(ds[i]) for i in range(len(ds))
                   if starts[2] <= rows_of(ds[i])[0] < ends[2]][-1]
    assert list(last_of_ep2[-Ta:]) == [ends[2] - 1] * Ta
    assert last_of_ep2[-Ta - 1] == ends[2] - 2
    # episodes too short for a window (3 < Tp - pad_before - pad_after = 4) give none
    assert not any(starts[3] <= rows_of(ds[i])[0] for i in range(len(ds)))


def test_create_indices_matches_reference_rule():
    idx = create_indices(np.array([10]), sequence_length=4, pad_before=1, pad_after=2)
    assert idx[:, 2].tolist() == list(range(-1, 10 - 4 + 2 + 1))
    assert create_indices(np.array([10, 15]), 4, 0, 0, episodes=[1]).tolist() == \
        [[10, 15, 0], [10, 15, 1]]
    assert create_indices(np.array([10, 12]), 4, 0, 0, episodes=[1]).tolist() == []   # too short


def test_episode_subset_stats_and_split(store):
    train, val = train_val_split(len(LENGTHS), val_ratio=0.25, seed=3)
    assert sorted(train + val) == list(range(len(LENGTHS))) and len(val) == 1
    assert train_val_split(4, 0.25, seed=3) == (train, val)          # deterministic
    assert train_val_split(4, 0.0, 0) == ([0, 1, 2, 3], [])
    assert len(train_val_split(2, 0.9, 0)[0]) == 1                   # keeps one for training

    ds = make(store, episodes=[0, 2])
    ends = np.cumsum(LENGTHS)
    starts = ends - LENGTHS
    for i in range(len(ds)):
        r = rows_of(ds[i])[0]
        assert starts[0] <= r < ends[0] or starts[2] <= r < ends[2]
    stats = ds.get_stats()
    rows = np.concatenate([np.arange(starts[0], ends[0]), np.arange(starts[2], ends[2])])
    np.testing.assert_allclose(stats["action"]["min"], [rows.min(), -rows.max()])
    np.testing.assert_allclose(stats["action"]["max"], [rows.max(), -rows.min()])
    np.testing.assert_allclose(stats["robot_pose"]["min"], [10 * rows.min(), 10 * rows.min() + 1])
    np.testing.assert_allclose(stats["robot_pose"]["max"], [10 * rows.max(), 10 * rows.max() + 1])
    with pytest.raises(IndexError):
        make(store, episodes=[9])
    with pytest.raises(KeyError, match="wrist"):
        SequenceDataset(store, 2, 8, 4, camera_keys=["wrist"], lowdim_keys=[])


def test_resize_and_dataloader_workers(store):
    ds = make(store, image_size=(4, 5))
    assert ds[3]["obs"]["top"].shape == (2, 3, 4, 5)
    loader = DataLoader(make(store), batch_size=8, shuffle=True, num_workers=2)
    n = 0
    for batch in loader:
        assert batch["obs"]["top"].shape[1:] == (2, 3, H, W)
        assert batch["action"].shape[1:] == (8, 2)
        n += len(batch["action"])
    assert n == len(make(store))


def test_images_held_in_memory_when_they_fit(tmp_path, store):
    """image_cache_gb: the same windows, and no zarr read per item once held (the image chunks can
    go); over the limit the images stay lazy and read per item. Workers see the held images."""
    import shutil
    copy = tmp_path / "d.zarr"
    shutil.copytree(store, copy)
    lazy = make(store)
    held = make(copy, image_cache_gb=1.0)
    over = make(copy, image_cache_gb=1e-9)          # H*W*3 bytes per row: far over 1 byte
    shutil.rmtree(copy / "data" / "top" / "c")       # the chunks of the image array
    for i in range(len(lazy)):
        a, b = lazy[i], held[i]
        torch.testing.assert_close(b["obs"]["top"], a["obs"]["top"])
        torch.testing.assert_close(b["action"], a["action"])
    # a lazy dataset of the gutted store reads the missing chunks as the fill value, not the rows
    assert not torch.equal(over[len(over) - 1]["obs"]["top"], lazy[len(lazy) - 1]["obs"]["top"])
    loader = DataLoader(held, batch_size=4, num_workers=2)
    n = sum(len(b["action"]) for b in loader)
    assert n == len(held)
