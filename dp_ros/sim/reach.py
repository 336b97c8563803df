"""Reach: move the pusher onto a coloured target disc and hold it there.

A deliberately easy visuomotor task (the target is visible only in the image) that a small image
policy trained on a CPU can solve; it shares Push-T's interface and task coordinates (512x512
units, x right, y down) so the world, nodes and evaluation treat both alike.
"""

import cv2
import numpy as np

from .pusht import TASK_SIZE, substeps

# Colours (RGB) chosen to match gym-pusht's look: white floor, RoyalBlue pusher.
_BACKGROUND = (255, 255, 255)
_WALL = (211, 211, 211)
_PUSHER = (65, 105, 225)
_PUSHER_INNER = (78, 126, 255)
_TARGET = (220, 40, 40)


class ReachTask:
    """Target disc at a random place; success once the pusher stays within `success_radius` of
    the target centre for `hold_time_s` (latched until the next reset).

    `coverage` is a dense progress score: 1 - distance / (size / 2), clipped to [0, 1].
    """

    size = TASK_SIZE

    def __init__(self, target_radius=24.0, success_radius=None, hold_time_s=0.5, margin=60.0,
                 min_start_distance=120.0, pusher_tracking="pd", physics_dt=0.01):
        if pusher_tracking not in ("pd", "kinematic"):
            raise ValueError(f"pusher_tracking must be 'pd' or 'kinematic', got {pusher_tracking!r}")
        self.target_radius = float(target_radius)
        self.success_radius = float(target_radius if success_radius is None else success_radius)
        self.hold_time_s = float(hold_time_s)
        self.margin = float(margin)
        self.min_start_distance = float(min_start_distance)
        self.pusher_tracking = pusher_tracking
        self.physics_dt = float(physics_dt)
        self.agent_radius = 15.0
        self.k_p, self.k_v = 100.0, 20.0  # gym-pusht's pusher PD gains
        self._rng = np.random.default_rng(0)
        self._cache = {}
        self.reset(0)

    def reset(self, seed=None, agent_xy=None):
        """New target (and agent start unless agent_xy is given), from the seeded RNG."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        lo, hi = self.margin, self.size - self.margin
        start = self._rng.uniform(lo, hi, 2)  # always drawn: same target per seed either way
        self._agent = start if agent_xy is None else np.asarray(agent_xy, dtype=float).copy()
        # Redraw until the target is a real reach away from the start (bounded: the box is big).
        for _ in range(100):
            self._target = self._rng.uniform(lo, hi, 2)
            if np.linalg.norm(self._target - self._agent) >= self.min_start_distance:
                break
        self._vel = np.zeros(2)
        self._hold_s = 0.0
        self._success = False
        self.time_s = 0.0
        self._cache.clear()

    def set_state(self, agent_xy, target_xy=None):
        self._agent = np.asarray(agent_xy, dtype=float).copy()
        self._vel = np.zeros(2)
        if target_xy is not None:
            self._target = np.asarray(target_xy, dtype=float).copy()
        self._hold_s = 0.0
        self._success = False
        self._cache.clear()

    def step(self, pusher_xy, dt_s):
        dt_s = float(dt_s)
        if dt_s <= 0:
            return
        n, h = substeps(dt_s, self.physics_dt)
        target = np.asarray(pusher_xy, dtype=float)
        for _ in range(n):
            if self.pusher_tracking == "pd":
                self._vel = self._vel + (self.k_p * (target - self._agent) - self.k_v * self._vel) * h
            else:
                self._vel = (target - self._agent) / h
            self._agent = self._agent + self._vel * h
            # Hold timer advances per substep so success does not depend on the caller's dt.
            if self.distance <= self.success_radius:
                self._hold_s += h
                if self._hold_s >= self.hold_time_s - 1e-9:
                    self._success = True
            else:
                self._hold_s = 0.0
        self.time_s += dt_s
        self._cache.clear()

    @property
    def distance(self):
        return float(np.linalg.norm(self._agent - self._target))

    @property
    def coverage(self):
        return float(np.clip(1.0 - self.distance / (0.5 * self.size), 0.0, 1.0))

    @property
    def success(self):
        return self._success

    @property
    def hold_s(self):
        return self._hold_s

    @property
    def target_xy(self):
        return self._target.copy()

    @property
    def agent_xy(self):
        return self._agent.copy()

    def _draw(self, h, w, origin=(0.0, 0.0), extent=TASK_SIZE):
        """Draw the square task window [origin, origin + extent] into an h x w image."""
        ox, oy = float(origin[0]), float(origin[1])
        sx, sy = w / float(extent), h / float(extent)
        img = np.full((h, w, 3), _BACKGROUND, np.uint8)
        sh = 4  # 4 fractional bits: discs land at their true sub-pixel positions

        def pt(p):
            return (int(round((p[0] - ox) * sx * 16)), int(round((p[1] - oy) * sy * 16)))

        def rad(r):
            return max(1, int(round(r * min(sx, sy) * 16)))

        wall = max(1, int(round(4 * min(sx, sy))))
        cv2.rectangle(img, pt((5, 5)), pt((506, 506)), _WALL, wall, cv2.LINE_AA, sh)
        cv2.circle(img, pt(self._target), rad(self.target_radius), _TARGET, -1, cv2.LINE_AA, sh)
        cv2.circle(img, pt(self._agent), rad(self.agent_radius), _PUSHER, -1, cv2.LINE_AA, sh)
        cv2.circle(img, pt(self._agent), rad(self.agent_radius - 4), _PUSHER_INNER, -1, cv2.LINE_AA, sh)
        return img

    def render_full(self):
        """512x512 RGB top-down view; cached until the state changes."""
        if "full" not in self._cache:
            self._cache["full"] = self._draw(self.size, self.size)
        return self._cache["full"]

    def render(self, size=(96, 96)):
        """Top-down view drawn directly at size=(H, W) (anti-aliased; no 512 intermediate)."""
        return self._draw(int(size[0]), int(size[1]))

    def render_window(self, center_xy, extent, size=(96, 96)):
        """A square window of the plane, `extent` units wide, centred on center_xy."""
        c = np.asarray(center_xy, dtype=float)
        return self._draw(int(size[0]), int(size[1]), c - extent / 2.0, extent)
