"""Rollout videos: what the runner saw during a policy episode, drawn frame by frame.

RolloutTrace collects, while an episode runs, the camera frames as published to the policy, every
chunk the policy sent, the waypoints the scheduler streamed and the task's coverage (the runner's
monitor feeds it from its ROS callbacks). render_rollout() then draws, on each frame of the top
camera, the waypoints already executed (time <= the frame's capture time) and the most recent
chunk received by then, in the task plane's pixel frame, with success and coverage in a corner.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dp_ros.sim.pusht import TASK_SIZE
from dp_ros.sim.world import TaskPlaneMapping

EXECUTED_RGB = (30, 110, 255)
CHUNK_RGB = (255, 140, 0)
SUCCESS_RGB = (0, 160, 0)
FAIL_RGB = (220, 30, 30)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_VIDEO_SIDE = 384        # 96x96 policy frames are scaled up (nearest) so the overlay is legible


class PixelFrame:
    """Robot base-frame xy (m) -> pixel (x right, y down) of the sim world's top camera image.
    The world maps [task_xy_min, task_xy_max] onto the task plane (TaskPlaneMapping) and the
    top camera shows the whole plane, so pixel = task units / TASK_SIZE * image size."""

    def __init__(self, task_xy_min, task_xy_max, image_hw):
        self.mapping = TaskPlaneMapping(task_xy_min, task_xy_max)
        self.h, self.w = int(image_hw[0]), int(image_hw[1])

    def __call__(self, xy_m, scale: float = 1.0) -> np.ndarray:
        uv = self.mapping.to_task(np.asarray(xy_m, dtype=float).reshape(-1, 2)) / TASK_SIZE
        return uv * np.array([self.w, self.h]) * scale


@dataclass
class RolloutData:
    """One episode's record. frames[camera] = (stamps_ns (N,), images (N, H, W, 3));
    chunks = [(receive_ns, times_ns (Tp,), xy (Tp, 2))]; waypoints = (times_ns, xy) streamed
    to the servo (the latest value per time: blending may revise a waypoint); coverage =
    (receive_ns (M,), coverage (M,))."""
    frames: dict = field(default_factory=dict)
    chunks: list = field(default_factory=list)
    waypoints: tuple = (np.zeros(0, np.int64), np.zeros((0, 2)))
    coverage: tuple = (np.zeros(0, np.int64), np.zeros(0))

    @property
    def n_frames(self) -> int:
        return len(next(iter(self.frames.values()))[0]) if self.frames else 0


class RolloutTrace:
    """Thread-safe collector (ROS callbacks add, the runner's thread starts, stops and reads).
    Nothing is kept while inactive, so the graph's idle time between episodes costs nothing."""

    def __init__(self, cameras):
        self.cameras = list(cameras)
        self._lock = threading.Lock()
        self.active = False
        self._clear()

    def _clear(self):
        self._frames = {c: [] for c in self.cameras}
        self._chunks, self._waypoints, self._coverage = [], {}, []

    def start(self):
        """Forget the last episode and record from now on."""
        with self._lock:
            self._clear()
            self.active = True

    def stop(self):
        """Stop recording; what was recorded stays until the next start()."""
        self.active = False

    def collect(self) -> RolloutData:
        with self._lock:
            frames = {}
            for cam, items in self._frames.items():
                items = sorted(items, key=lambda x: x[0])
                stamps = np.array([s for s, _ in items], dtype=np.int64)
                frames[cam] = (stamps, np.stack([im for _, im in items]) if items else
                               np.zeros((0, 1, 1, 3), np.uint8))
            wt = np.array(sorted(self._waypoints), dtype=np.int64)
            wxy = np.array([self._waypoints[t] for t in wt], dtype=float).reshape(-1, 2)
            cov = np.array(self._coverage, dtype=float).reshape(-1, 2)
            return RolloutData(frames, list(self._chunks), (wt, wxy),
                               (cov[:, 0].astype(np.int64), cov[:, 1]))

    def add_frame(self, camera, stamp_ns, image):
        if self.active and camera in self._frames:
            with self._lock:
                self._frames[camera].append((int(stamp_ns), np.array(image, dtype=np.uint8)))

    def add_chunk(self, receive_ns, times_ns, xy):
        if self.active and len(times_ns):
            with self._lock:
                self._chunks.append((int(receive_ns), np.asarray(times_ns, np.int64),
                                     np.asarray(xy, float)[:, :2]))

    def add_waypoints(self, times_ns, xy):
        if self.active:
            with self._lock:
                self._waypoints.update({int(t): tuple(p[:2]) for t, p in zip(times_ns, xy)})

    def add_coverage(self, receive_ns, coverage):
        if self.active:
            with self._lock:
                self._coverage.append((int(receive_ns), float(coverage)))


def _latest_before(times, t) -> int:
    """Index of the last entry of sorted `times` at or before t, -1 if none."""
    return int(np.searchsorted(times, t, side="right")) - 1


def upscale(img: np.ndarray, min_side: int = MIN_VIDEO_SIDE) -> tuple[np.ndarray, int]:
    s = max(1, int(np.ceil(min_side / max(img.shape[:2]))))
    if s == 1:
        return img.copy(), 1
    return cv2.resize(img, (img.shape[1] * s, img.shape[0] * s), interpolation=cv2.INTER_NEAREST), s


def draw_paths(img, pixel_frame: PixelFrame, scale: int, executed_xy, chunk_xy) -> np.ndarray:
    """Executed waypoints as a line, the planned chunk as dots joined by a thin line."""
    if len(executed_xy) > 1:
        pts = pixel_frame(executed_xy, scale).round().astype(np.int32)
        cv2.polylines(img, [pts], False, EXECUTED_RGB, 2, cv2.LINE_AA)
    if chunk_xy is not None and len(chunk_xy):
        pts = pixel_frame(chunk_xy, scale).round().astype(np.int32)
        cv2.polylines(img, [pts], False, CHUNK_RGB, 1, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, tuple(int(v) for v in p), 3, CHUNK_RGB, -1, cv2.LINE_AA)
    return img


def draw_label(img, lines, color=(0, 0, 0)) -> np.ndarray:
    """Text lines in the top-left corner on a white box (readable on any background)."""
    scale, th, pad, step = 0.45, 1, 4, 16
    width = max(cv2.getTextSize(t, FONT, scale, th)[0][0] for t, _ in lines)
    cv2.rectangle(img, (0, 0), (width + 2 * pad, step * len(lines) + pad), (255, 255, 255), -1)
    for i, (text, rgb) in enumerate(lines):
        cv2.putText(img, text, (pad, step * (i + 1)), FONT, scale, rgb or color, th, cv2.LINE_AA)
    return img


def render_rollout(data: RolloutData, pixel_frame: PixelFrame | None, episode: dict,
                   overlay_camera: str = "top"):
    """Yields one RGB frame per frame of the first camera: every camera side by side (nearest
    frame in capture time), the overlay on `overlay_camera`. episode: run_episode()'s dict."""
    if not data.n_frames:
        return
    cams = list(data.frames)
    stamps0 = data.frames[cams[0]][0]
    chunk_recv = np.array([c[0] for c in data.chunks], dtype=np.int64)
    wt, wxy = data.waypoints
    cov_t, cov = data.coverage
    ok = bool(episode.get("success"))
    verdict = ("SUCCESS", SUCCESS_RGB) if ok else ("FAIL", FAIL_RGB)
    for t in stamps0:
        tiles = []
        for cam in cams:
            st, ims = data.frames[cam]
            k = int(np.argmin(np.abs(st - t)))
            img, s = upscale(ims[k])
            if cam == overlay_camera and pixel_frame is not None:
                c = _latest_before(chunk_recv, t)
                draw_paths(img, pixel_frame, s, wxy[wt <= t], data.chunks[c][2] if c >= 0 else None)
            tiles.append(img)
        frame = np.concatenate(tiles, axis=1) if len(tiles) > 1 else tiles[0]
        j = _latest_before(cov_t, t)
        coverage = cov[j] if j >= 0 else 0.0
        yield draw_label(frame, [(f"ep {episode.get('episode', '?')}  {verdict[0]}", verdict[1]),
                                 (f"coverage {coverage:.2f}", None),
                                 (f"t {(t - stamps0[0]) / 1e9:4.1f} s", None)])


class RolloutVideos:
    """A run's videos: episode_NNN.mp4 per episode and contact_sheet.png of all episodes (each
    episode's last frame) in out_dir."""

    def __init__(self, out_dir, pixel_frame: PixelFrame | None, fps: float):
        self.out_dir = Path(out_dir)
        self.pixel_frame = pixel_frame
        self.fps = float(fps)
        self.tiles, self.labels = [], []

    def add(self, data: RolloutData, episode: dict) -> dict | None:
        """Write the episode's MP4; None when no camera frame arrived during it."""
        from dp_ros.viz.video import write_mp4

        if not data.n_frames:
            return None
        last = {}

        def frames():
            for f in render_rollout(data, self.pixel_frame, episode):
                last["frame"] = f
                yield f
        info = write_mp4(self.out_dir / f"episode_{int(episode.get('episode', len(self.tiles))):03d}.mp4",
                         frames(), self.fps)
        self.tiles.append(last["frame"])
        self.labels.append(episode_label(episode))
        return info

    def finish(self) -> dict | None:
        if not self.tiles:
            return None
        return contact_sheet(self.tiles, self.labels, self.out_dir / "contact_sheet.png")


def contact_sheet(tiles, labels, path, columns: int = 10, tile_side: int = 192) -> dict:
    """One PNG: each episode's last frame (with its overlay), scaled to tile_side, its label
    underneath, `columns` per row."""
    if not tiles:
        raise ValueError("contact sheet: no episodes")
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    label_h, gap = 18, 4
    cell = []
    for img, label in zip(tiles, labels):
        h, w = img.shape[:2]
        f = tile_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        cell.append((img, label))
    ch = max(c[0].shape[0] for c in cell) + label_h
    cw = max(c[0].shape[1] for c in cell)
    sheet = np.full((rows * (ch + gap) + gap, cols * (cw + gap) + gap, 3), 255, np.uint8)
    for i, (img, (text, rgb)) in enumerate(cell):
        y, x = gap + (i // cols) * (ch + gap), gap + (i % cols) * (cw + gap)
        sheet[y:y + img.shape[0], x:x + img.shape[1]] = img
        cv2.putText(sheet, text, (x + 2, y + img.shape[0] + 13), FONT, 0.4, rgb, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return {"path": str(path), "height": sheet.shape[0], "width": sheet.shape[1]}


def episode_label(episode: dict) -> tuple[str, tuple]:
    ok = bool(episode.get("success"))
    return (f"ep {episode.get('episode')} {'ok' if ok else 'fail'} cov {episode.get('final_coverage', 0):.2f}",
            SUCCESS_RGB if ok else FAIL_RGB)
