"""Time-aligned observation history for the policy (To steps spaced dt apart).

Observation times: t_k = t_last - (To-1-k)*dt, k = 0..To-1, where t_last is the newest capture
time of the reference camera (the first camera name; with no cameras, the newest time covered by
every state key).

The matching rules and tolerances are core/timing.py's, the same the converter uses for training
data.

Cameras: for each t_k every camera contributes the frame nearest in capture time. A dropped frame
is thus replaced by its neighbour; if the nearest frame is farther than timing.frame_match_limit_ns
the observation is refused (StaleObservation). Observation.frame_stamps_ns tells which frames were used;
stats["frames_dropped"] estimates frames missing from each stream (gaps in capture times).

Robot state: per key, linearly interpolated between the two samples around t_k (pose keys, dim 7
with "pose" in the name or listed in pose_keys, slerp their quaternion). Refused when the two
samples are more than the state gap limit apart (timing.state_gap_limit_ns), when t_k is before
the oldest sample, or when t_k is more than that limit after the newest one. Within that window after the newest sample the
newest value is held (not extrapolated): a 125 Hz state stream normally lags the newest camera
frame by a few ms, and extrapolation would amplify noise.

Staleness against now: build(now_ns) refuses when any camera's newest frame or any state key's
newest sample is older than max_frame_age_s (a tracker that lost its object, a stalled robot
state stream: without cameras nothing else would notice). Memory: samples older than history_s behind the newest are dropped. A stamp more
than history_s behind the newest one of its stream means the clock went back (simulation or bag
restart): the buffer clears itself and counts it in stats["time_resets"].

Thread-safe: ROS callbacks add while an inference thread builds.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

import numpy as np

from dp_ros.core import timing
from dp_ros.core.transforms import normalize_quat, quat_slerp


class StaleObservation(RuntimeError):
    """The buffer cannot produce a valid, fresh, time-aligned observation right now."""


@dataclass
class Observation:
    stamps_ns: np.ndarray                    # (To,) int64 observation times
    images: dict                             # cam -> (To, H, W, 3) uint8
    lowdim: dict                             # key -> (To, D) float64
    t_last_ns: int                           # = stamps_ns[-1]
    frame_stamps_ns: dict = field(default_factory=dict)   # cam -> (To,) capture time of each frame used


class _Stream:
    """Sorted (stamp, value) samples of one camera or state key."""

    def __init__(self):
        self.stamps: list[int] = []
        self.values: list = []

    def insert(self, stamp: int, value) -> bool:
        """Insert in time order; same stamp replaces. Returns True when appended at the end."""
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.values[i] = value
            return False
        self.stamps.insert(i, stamp)
        self.values.insert(i, value)
        return i == len(self.stamps) - 1

    def prune_before(self, t: int):
        k = bisect.bisect_left(self.stamps, t)
        if k:
            del self.stamps[:k]
            del self.values[:k]

    @property
    def newest(self):
        return self.stamps[-1] if self.stamps else None


def fit_frame(image: np.ndarray, size) -> np.ndarray:
    """A camera frame at the policy's (H, W): area interpolation, the right filter for shrinking."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    import cv2   # only where frames need it

    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def _ms(ns) -> str:
    return f"{ns * 1e-6:.1f} ms"


class ObservationBuffer:
    def __init__(self, camera_names, state_keys_dims: dict, obs_horizon: int, dt_s: float,
                 max_frame_age_s: float = 0.25, history_s: float = 2.0, pose_keys=None):
        self.camera_names = list(camera_names)
        self.state_dims = {str(k): int(v) for k, v in dict(state_keys_dims).items()}
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"duplicate camera names: {self.camera_names}")
        if not self.camera_names and not self.state_dims:
            raise ValueError("ObservationBuffer needs at least one camera or state key")
        if any(d <= 0 for d in self.state_dims.values()):
            raise ValueError(f"state dims must be positive: {self.state_dims}")
        self.obs_horizon = int(obs_horizon)
        if self.obs_horizon < 1:
            raise ValueError(f"obs_horizon must be >= 1, got {obs_horizon}")
        for name, v in (("dt_s", dt_s), ("max_frame_age_s", max_frame_age_s), ("history_s", history_s)):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v}")
        self.dt_ns = timing.step_ns(dt_s)
        span_s = (self.obs_horizon - 1) * dt_s
        if history_s <= span_s + max_frame_age_s:
            raise ValueError(f"history_s={history_s} must exceed the observation span "
                             f"{span_s:.3f} s + max_frame_age_s {max_frame_age_s}")
        self.max_frame_age_ns = int(round(max_frame_age_s * 1e9))
        self.max_state_gap_ns = timing.state_gap_limit_ns(self.dt_ns)
        self.history_ns = int(round(history_s * 1e9))
        self.match_limit_ns = timing.frame_match_limit_ns(self.dt_ns)
        if pose_keys is None:
            pose_keys = [k for k, d in self.state_dims.items() if d == 7 and "pose" in k]
        self.pose_keys = set(pose_keys)
        if not self.pose_keys <= set(self.state_dims):
            raise ValueError(f"pose_keys {sorted(self.pose_keys - set(self.state_dims))} are not state keys")
        self._lock = threading.Lock()
        self.stats = {}
        self.reset()

    def reset(self):
        """Forget all samples (keeps counters that describe the buffer's lifetime)."""
        with self._lock:
            self._frames = {c: _Stream() for c in self.camera_names}
            self._state = {k: _Stream() for k in self.state_dims}
            self._shapes = {}
            for k in ("builds", "stale", "time_resets", "shape_changes"):
                self.stats.setdefault(k, 0)
            self.stats.setdefault("frames_dropped", {c: 0 for c in self.camera_names})
            self.stats.setdefault("last_stale_reason", "")

    # ------------------------------------------------------------------ input
    def _check_clock(self, stream: _Stream, stamp: int):
        newest = stream.newest
        if newest is not None and stamp < newest - self.history_ns:
            # Far older than anything kept: the clock went back. Start over rather than keep
            # a history that would never be refreshed.
            self._frames = {c: _Stream() for c in self.camera_names}
            self._state = {k: _Stream() for k in self.state_dims}
            self.stats["time_resets"] += 1

    def add_frame(self, camera: str, stamp_ns: int, image: np.ndarray):
        if camera not in self._frames:
            raise ValueError(f"unknown camera {camera!r} (expected one of {self.camera_names})")
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"camera {camera!r}: image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        stamp = int(stamp_ns)
        with self._lock:
            if self._shapes.get(camera, img.shape) != img.shape:
                # Resolution changed: old frames cannot be stacked with new ones.
                self._frames[camera] = _Stream()
                self.stats["shape_changes"] += 1
            self._shapes[camera] = img.shape
            stream = self._frames[camera]
            self._check_clock(stream, stamp)
            stream = self._frames[camera]
            prev = stream.newest
            if stream.insert(stamp, img) and prev is not None:
                self._count_drops(camera, stream, stamp - prev)
            stream.prune_before(stream.newest - self.history_ns)

    def _count_drops(self, camera, stream, gap_ns):
        # Camera period estimated as the median recent interval (robust to the drops themselves).
        intervals = np.diff(stream.stamps[-32:-1])
        if len(intervals) < 4:
            return
        period = float(np.median(intervals))
        if period > 0 and gap_ns > 1.5 * period:
            self.stats["frames_dropped"][camera] += int(round(gap_ns / period)) - 1

    def add_state(self, stamp_ns: int, values: dict):
        """Add samples of one or more state keys measured at stamp_ns. ValueError on unknown
        keys, wrong sizes or non-finite values (nothing is added then)."""
        stamp = int(stamp_ns)
        checked = {}
        for key, v in values.items():
            if key not in self.state_dims:
                raise ValueError(f"unknown state key {key!r} (expected one of {sorted(self.state_dims)})")
            a = np.array(v, dtype=np.float64).reshape(-1)
            if a.shape != (self.state_dims[key],):
                raise ValueError(f"state {key!r} must have {self.state_dims[key]} values, got {a.size}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"state {key!r} contains NaN or inf")
            if key in self.pose_keys:
                a[3:] = normalize_quat(a[3:])
            checked[key] = a
        with self._lock:
            for key, a in checked.items():
                self._check_clock(self._state[key], stamp)
                stream = self._state[key]
                stream.insert(stamp, a)
                stream.prune_before(stream.newest - self.history_ns)

    # ------------------------------------------------------------------ output
    def build(self, now_ns: int | None = None) -> Observation:
        """The observation ending at the reference camera's newest frame, or StaleObservation."""
        with self._lock:
            try:
                obs = self._build(now_ns)
            except StaleObservation as exc:
                self.stats["stale"] += 1
                self.stats["last_stale_reason"] = str(exc)
                raise
            self.stats["builds"] += 1
            return obs

    def _build(self, now_ns):
        for cam in self.camera_names:
            if not self._frames[cam].stamps:
                raise StaleObservation(f"camera {cam!r}: no frames received")
        for key in self.state_dims:
            if not self._state[key].stamps:
                raise StaleObservation(f"state {key!r}: no samples received")
        if now_ns is not None:
            for cam in self.camera_names:
                age = int(now_ns) - self._frames[cam].newest
                if age > self.max_frame_age_ns:
                    raise StaleObservation(f"camera {cam!r}: newest frame is {_ms(age)} old "
                                           f"(max {_ms(self.max_frame_age_ns)})")
            for key in self.state_dims:
                age = int(now_ns) - self._state[key].newest
                if age > self.max_frame_age_ns:
                    raise StaleObservation(f"state {key!r}: newest sample is {_ms(age)} old "
                                           f"(max {_ms(self.max_frame_age_ns)})")
        if self.camera_names:
            t_last = self._frames[self.camera_names[0]].newest
        else:
            t_last = min(s.newest for s in self._state.values())
        times = timing.observation_times(t_last, self.obs_horizon, self.dt_ns)

        picks = {cam: self._match_frames(cam, times) for cam in self.camera_names}
        lowdim = {key: self._interp_state(key, times) for key in self.state_dims}
        images, frame_stamps = {}, {}
        for cam, idx in picks.items():
            stream = self._frames[cam]
            images[cam] = np.stack([stream.values[i] for i in idx])
            frame_stamps[cam] = np.array([stream.stamps[i] for i in idx], dtype=np.int64)
        return Observation(times, images, lowdim, int(t_last), frame_stamps)

    def _match_frames(self, cam, times) -> list[int]:
        stamps = np.asarray(self._frames[cam].stamps, dtype=np.int64)
        idx, err = timing.nearest(stamps, times)
        bad = np.nonzero(err > self.match_limit_ns)[0]
        if len(bad):
            k = int(bad[0])
            steps_back = self.obs_horizon - 1 - k
            raise StaleObservation(
                f"camera {cam!r}: no frame within {_ms(self.match_limit_ns)} of observation time "
                f"t_last-{steps_back}*dt (nearest is {_ms(int(err[k]))} away; "
                f"{len(stamps)} frames spanning {_ms(int(stamps[-1] - stamps[0]))} in history)")
        return idx.tolist()

    def _interp_state(self, key, times) -> np.ndarray:
        stream = self._state[key]
        s = np.asarray(stream.stamps, dtype=np.int64)
        v = np.stack(stream.values)
        lo, hi, w, gap = timing.bracket(s, times)      # past the newest: held (hi == lo)
        if np.any(times < s[0]):
            k = int(np.nonzero(times < s[0])[0][0])
            raise StaleObservation(f"state {key!r}: observation time t_last-{self.obs_horizon - 1 - k}*dt "
                                   f"is {_ms(int(s[0] - times[k]))} before the oldest sample "
                                   "(history too short)")
        after = times - s[-1]
        if np.any(after > self.max_state_gap_ns):
            raise StaleObservation(f"state {key!r}: newest sample is {_ms(int(after.max()))} older than "
                                   f"the observation time (max {_ms(self.max_state_gap_ns)})")
        if np.any(gap > self.max_state_gap_ns):
            raise StaleObservation(f"state {key!r}: gap of {_ms(int(gap.max()))} between samples around "
                                   f"an observation time (max {_ms(self.max_state_gap_ns)})")
        out = v[lo] + w[:, None] * (v[hi] - v[lo])
        if key in self.pose_keys:
            out[:, 3:] = quat_slerp(v[lo, 3:], v[hi, 3:], w)
        return out
