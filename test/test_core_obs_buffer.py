import threading

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.core.obs_buffer import Observation, ObservationBuffer, StaleObservation
from dp_ros.core.transforms import quat_angle

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
DT = 0.1


def _img(stamp):
    # encode the capture stamp in the pixels so a test can tell which frame was used
    return np.full((4, 5, 3), (stamp // MS) % 251, dtype=np.uint8)


def _buffer(**kw):
    args = dict(camera_names=["top", "wrist"], state_keys_dims={"tcp_xy": 2}, obs_horizon=2, dt_s=DT)
    args.update(kw)
    return ObservationBuffer(**args)


def _feed(buf, t_end_ns, rng, fps=30.0, jitter_ms=3.0, drop=0.0, state_hz=125.0, cams=("top", "wrist"),
          span_s=1.0):
    """Cameras with jittered capture times and random drops; state x = t (seconds), y = 2t."""
    period = int(1e9 / fps)
    n = int(span_s * fps)
    for cam in cams:
        run = 0                                   # consecutive drops, at most 2 (gap < dt)
        for t in t_end_ns - period * np.arange(n, -1, -1, dtype=np.int64):
            t = int(t)
            if cam == cams[0] and t == t_end_ns:
                stamp = t                                  # reference frame exactly at t_end
            else:
                stamp = t + int(rng.uniform(-jitter_ms, jitter_ms) * MS)
            if t != t_end_ns and run < 2 and rng.uniform() < drop:   # newest frames always arrive
                run += 1
                continue
            run = 0
            stamp = min(stamp, t_end_ns)
            buf.add_frame(cam, stamp, _img(stamp))
    sp = int(1e9 / state_hz)
    for t in range(t_end_ns - int(span_s * 1e9), t_end_ns + 2 * sp, sp):
        s = (t - T0) * 1e-9
        buf.add_state(t, {"tcp_xy": np.array([s, 2 * s])})


def test_alignment_with_jitter_and_dropped_frames():
    rng = np.random.default_rng(0)
    for trial in range(30):
        buf = _buffer(obs_horizon=3)
        t_end = T0 + 5 * 10**9 + int(rng.integers(0, 10**8))
        _feed(buf, t_end, rng, drop=0.3)
        obs = buf.build(now_ns=t_end + 40 * MS)
        assert isinstance(obs, Observation)
        assert obs.t_last_ns == t_end and obs.stamps_ns[-1] == t_end
        assert np.all(np.diff(obs.stamps_ns) == int(DT * 1e9))
        for cam in ("top", "wrist"):
            assert obs.images[cam].shape == (3, 4, 5, 3) and obs.images[cam].dtype == np.uint8
            # nearest frame was used: no frame in the buffer is closer to the observation time
            stamps = np.array(buf._frames[cam].stamps)
            for k, t in enumerate(obs.stamps_ns):
                used = obs.frame_stamps_ns[cam][k]
                assert abs(used - t) == np.min(np.abs(stamps - t))
                assert abs(used - t) <= buf.match_limit_ns
                assert obs.images[cam][k, 0, 0, 0] == (used // MS) % 251
        # state linearly interpolated at the observation times
        s = (obs.stamps_ns - T0) * 1e-9
        assert np.allclose(obs.lowdim["tcp_xy"], np.stack([s, 2 * s], axis=1), atol=1e-9)


def test_dropped_frames_are_counted():
    buf = _buffer(camera_names=["top"])
    period = int(1e9 / 30)
    t = T0
    for i in range(60):
        if i % 10 != 5:                       # one frame in ten missing
            buf.add_frame("top", t + i * period, _img(0))
    assert buf.stats["frames_dropped"]["top"] == 6


def test_missing_frame_beyond_half_dt_raises():
    buf = _buffer(camera_names=["top"])
    # frames only at t_end and at t_end - 300 ms: the observation at t_end - 100 ms has none near
    t_end = T0 + 10**9
    buf.add_frame("top", t_end - 300 * MS, _img(0))
    buf.add_frame("top", t_end, _img(0))
    for t in range(t_end - 500 * MS, t_end + 10 * MS, 8 * MS):
        buf.add_state(t, {"tcp_xy": [0.0, 0.0]})
    with pytest.raises(StaleObservation, match=r"camera 'top': no frame within 60\.0 ms.*t_last-1\*dt"):
        buf.build(now_ns=t_end)
    assert buf.stats["stale"] == 1 and "top" in buf.stats["last_stale_reason"]


def test_stale_camera_raises_with_age():
    rng = np.random.default_rng(1)
    buf = _buffer()
    t_end = T0 + 10**9
    _feed(buf, t_end, rng)
    buf.build(now_ns=t_end + 100 * MS)                       # fresh enough
    msg = r"camera 'top': newest frame is 400\.0 ms old \(max 250\.0 ms\)"
    with pytest.raises(StaleObservation, match=msg):
        buf.build(now_ns=t_end + 400 * MS)


def test_one_camera_stale_is_named():
    rng = np.random.default_rng(2)
    buf = _buffer()
    t_end = T0 + 10**9
    _feed(buf, t_end, rng, cams=("top",))
    _feed(buf, t_end - 500 * MS, rng, cams=("wrist",))
    with pytest.raises(StaleObservation, match="camera 'wrist'"):
        buf.build(now_ns=t_end + 10 * MS)


def test_stale_state_raises():
    buf = _buffer(camera_names=["top"])
    t_end = T0 + 10**9
    for t in range(t_end - 500 * MS, t_end + 1, 33 * MS):
        buf.add_frame("top", t, _img(t))
    # state stopped 300 ms before the newest frame
    for t in range(t_end - 800 * MS, t_end - 300 * MS, 8 * MS):
        buf.add_state(t, {"tcp_xy": [0.0, 0.0]})
    msg = r"state 'tcp_xy': newest sample is .* older than the observation"
    with pytest.raises(StaleObservation, match=msg):
        buf.build()


def test_state_gap_and_short_history_raise():
    buf = _buffer(camera_names=["top"])
    t_end = T0 + 10**9
    for t in range(t_end - 500 * MS, t_end + 1, 33 * MS):
        buf.add_frame("top", t, _img(t))
    buf.add_state(t_end - 400 * MS, {"tcp_xy": [0.0, 0.0]})
    buf.add_state(t_end + 5 * MS, {"tcp_xy": [1.0, 1.0]})
    with pytest.raises(StaleObservation, match="gap of 405.0 ms"):
        buf.build()
    buf2 = _buffer(camera_names=["top"])
    for t in range(t_end - 500 * MS, t_end + 1, 33 * MS):
        buf2.add_frame("top", t, _img(t))
    buf2.add_state(t_end - 50 * MS, {"tcp_xy": [0.0, 0.0]})
    buf2.add_state(t_end + 5 * MS, {"tcp_xy": [1.0, 1.0]})
    with pytest.raises(StaleObservation, match="before the oldest sample"):
        buf2.build()


def test_state_slightly_behind_frame_is_held():
    buf = _buffer(camera_names=["top"])
    t_end = T0 + 10**9
    for t in range(t_end - 500 * MS, t_end + 1, 33 * MS):
        buf.add_frame("top", t, _img(t))
    for t in range(t_end - 500 * MS, t_end - 3 * MS, 8 * MS):
        buf.add_state(t, {"tcp_xy": [1.0, 2.0]})
    obs = buf.build(now_ns=t_end)
    assert np.allclose(obs.lowdim["tcp_xy"], [[1, 2], [1, 2]])


def test_no_data_and_bad_input():
    buf = _buffer()
    with pytest.raises(StaleObservation, match="no frames"):
        buf.build()
    with pytest.raises(ValueError):
        buf.add_frame("side", T0, _img(0))
    with pytest.raises(ValueError):
        buf.add_frame("top", T0, np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(ValueError):
        buf.add_frame("top", T0, np.zeros((4, 5, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        buf.add_state(T0, {"joints": np.zeros(6)})
    with pytest.raises(ValueError):
        buf.add_state(T0, {"tcp_xy": [np.nan, 0.0]})
    with pytest.raises(ValueError):
        buf.add_state(T0, {"tcp_xy": [0.0, 0.0, 0.0]})
    with pytest.raises(ValueError):
        ObservationBuffer(["a"], {}, obs_horizon=30, dt_s=0.1, history_s=2.0)   # history too short


def test_pose_state_is_slerped():
    buf = ObservationBuffer(["top"], {"tcp_pose": 7}, obs_horizon=2, dt_s=DT)
    t_end = T0 + 10**9
    for t in range(t_end - 500 * MS, t_end + 1, 50 * MS):
        buf.add_frame("top", t, _img(t))
    # rotation about z at 1 rad/s, sampled every 80 ms; observation times fall between samples
    for t in range(t_end - 600 * MS, t_end + 100 * MS, 80 * MS):
        s = (t - T0) * 1e-9
        q = Rotation.from_euler("z", s).as_quat()
        buf.add_state(t, {"tcp_pose": [s, 0, 0, *q]})
    obs = buf.build()
    for k, t in enumerate(obs.stamps_ns):
        s = (t - T0) * 1e-9
        pose = obs.lowdim["tcp_pose"][k]
        assert pose[0] == pytest.approx(s)
        assert quat_angle(pose[3:], Rotation.from_euler("z", s).as_quat()) < 1e-9


def test_memory_is_bounded_and_out_of_order_frames_are_sorted():
    buf = _buffer(camera_names=["top"], history_s=1.0)
    for i in range(300):
        buf.add_frame("top", T0 + i * 33 * MS, _img(0))
        buf.add_state(T0 + i * 33 * MS, {"tcp_xy": [0, 0]})
    assert len(buf._frames["top"].stamps) <= 32
    assert len(buf._state["tcp_xy"].stamps) <= 32
    buf.add_frame("top", T0 + 299 * 33 * MS - 10 * MS, _img(0))   # late arrival
    assert buf._frames["top"].stamps == sorted(buf._frames["top"].stamps)


def test_clock_going_back_resets():
    buf = _buffer(camera_names=["top"])
    buf.add_frame("top", T0 + 100 * 10**9, _img(0))
    buf.add_frame("top", T0, _img(0))
    assert buf.stats["time_resets"] == 1
    assert buf._frames["top"].stamps == [T0]


def test_state_only_policy():
    buf = ObservationBuffer([], {"tcp_xy": 2}, obs_horizon=2, dt_s=DT)
    for t in range(T0, T0 + 10**9, 8 * MS):
        buf.add_state(t, {"tcp_xy": [1.0, 1.0]})
    obs = buf.build()
    assert obs.images == {} and obs.lowdim["tcp_xy"].shape == (2, 2)


def test_a_state_only_policy_refuses_an_object_whose_tracker_stopped():
    """Without cameras nothing else ages the observation: a tracked object whose newest pose is
    older than max_frame_age_s against now is stale, while the robot state keeps coming."""
    buf = ObservationBuffer([], {"tcp_xy": 2, "block": 4}, obs_horizon=2, dt_s=DT, max_frame_age_s=0.25)
    for t in range(T0, T0 + 10**9, 8 * MS):
        buf.add_state(t, {"tcp_xy": [1.0, 1.0]})
    for t in range(T0, T0 + 500 * MS, 50 * MS):         # the tracker lost the object at 0.45 s
        buf.add_state(t, {"block": [0.5, 0.0, 1.0, 0.0]})
    assert buf.build(T0 + 600 * MS).lowdim["block"].shape == (2, 4)
    with pytest.raises(StaleObservation, match="state 'block': newest sample is"):
        buf.build(T0 + 10**9)


def test_concurrent_add_and_build():
    buf = _buffer(camera_names=["top"], history_s=0.5)
    stop = threading.Event()
    errors = []

    def producer():
        i = 0
        while not stop.is_set():
            t = T0 + i * 10 * MS
            buf.add_frame("top", t, _img(t))
            buf.add_state(t, {"tcp_xy": [0.0, 0.0]})
            i += 1

    th = threading.Thread(target=producer)
    th.start()
    try:
        for _ in range(300):
            try:
                buf.build()
            except StaleObservation:
                pass
            except Exception as exc:       # anything else is a race
                errors.append(exc)
    finally:
        stop.set()
        th.join()
    assert not errors
