"""Push-T (Diffusion Policy paper) on gym-pusht's physics, driven by an external pusher target.

gym-pusht's `PushTEnv.step(action)` always integrates one 0.1 s control step; a robot-driven world
needs arbitrary dt and a pusher that follows the robot TCP, so this wraps the env's pieces (space
set-up, seeding, PD constants, coverage metric, pygame drawing) and runs the substep loop itself.
Task coordinates are gym-pusht's: 512x512 units, x right, y down in the image.
"""

import os

import cv2
import numpy as np

TASK_SIZE = 512


def _import_pusht_env():
    # gym-pusht imports pygame at module level: keep it quiet and headless. Drawing goes to an
    # off-screen pygame.Surface, which needs no display at all.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from gym_pusht.envs.pusht import PushTEnv

    return PushTEnv


def surface_to_rgb(surface):
    """pygame Surface -> HxWx3 uint8 RGB without pygame's slow per-pixel conversions."""
    import pygame

    if surface.get_bitsize() == 32 and surface.get_masks()[:3] == (0xFF0000, 0xFF00, 0xFF):
        h, w = surface.get_height(), surface.get_width()
        pitch = surface.get_pitch()
        raw = np.frombuffer(surface.get_buffer(), np.uint8).reshape(h, pitch // 4, 4)[:, :w]
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)  # little-endian XRGB = bytes B, G, R, X
    return np.frombuffer(pygame.image.tobytes(surface, "RGB"), np.uint8).reshape(
        surface.get_height(), surface.get_width(), 3
    ).copy()


def substeps(dt_s: float, physics_dt: float) -> tuple[int, float]:
    """Split a control step into equal physics sub-steps no longer than physics_dt."""
    n = max(1, int(np.ceil(dt_s / physics_dt - 1e-9)))
    return n, dt_s / n


class PushTTask:
    """Push the grey T onto the green goal pose with a circular pusher.

    pusher_tracking:
      "pd"        the pusher follows the target with gym-pusht's PD law (k_p=100, k_v=20) at
                  every physics substep, as in the gym env (the paper's sim setting).
      "kinematic" the pusher reaches the target at the end of each substep (velocity =
                  error / substep), used when the target already is a tracked robot TCP.
    """

    size = TASK_SIZE

    def __init__(self, pusher_tracking="pd", physics_dt=0.01, success_threshold=0.95, damping=None,
                 block_cog=None):
        if pusher_tracking not in ("pd", "kinematic"):
            raise ValueError(f"pusher_tracking must be 'pd' or 'kinematic', got {pusher_tracking!r}")
        PushTEnv = _import_pusht_env()
        self._env = PushTEnv(obs_type="state", render_mode="rgb_array", damping=damping, block_cog=block_cog)
        self.pusher_tracking = pusher_tracking
        self.physics_dt = float(physics_dt)
        self.success_threshold = float(success_threshold)
        self.agent_radius = 15.0
        self._version = 0  # bumps on every state change; keys the render and coverage caches
        self._cache = {}
        self.time_s = 0.0
        self.reset(0)

    # -- state -------------------------------------------------------------------------------
    def reset(self, seed=None, agent_xy=None):
        """Random agent position and block pose drawn by gym-pusht's own seeded RNG; agent_xy,
        if given, overrides the agent's start (e.g. the robot's home)."""
        self._env.reset(seed=seed)
        if agent_xy is not None:
            self._env.agent.position = (float(agent_xy[0]), float(agent_xy[1]))
            self._env.agent.velocity = (0.0, 0.0)
        self.time_s = 0.0
        self._touch()

    def set_state(self, agent_xy, block_pose):
        """Place the agent at (x, y) and the block at (x, y, theta), at rest, exactly: block_pose
        reads back what was set. (gym-pusht's reset_to_state sets the angle after the position,
        and pymunk rotates about the centre of gravity, so its legacy states come out shifted.)"""
        env = self._env
        env.agent.position = (float(agent_xy[0]), float(agent_xy[1]))
        env.agent.velocity = (0.0, 0.0)
        env.block.angle = float(block_pose[2])
        env.block.position = (float(block_pose[0]), float(block_pose[1]))
        env.block.velocity = (0.0, 0.0)
        env.block.angular_velocity = 0.0
        env.space.reindex_shapes_for_body(env.agent)
        env.space.reindex_shapes_for_body(env.block)
        self._touch()

    def step(self, pusher_xy, dt_s):
        """Advance the physics by dt_s with the pusher tracking pusher_xy (task units)."""
        dt_s = float(dt_s)
        if dt_s <= 0:
            return
        n, h = substeps(dt_s, self.physics_dt)
        target = np.asarray(pusher_xy, dtype=float)
        agent, space = self._env.agent, self._env.space
        kp, kv = self._env.k_p, self._env.k_v
        for _ in range(n):
            pos = np.array(agent.position)
            if self.pusher_tracking == "pd":
                vel = np.array(agent.velocity)
                vel = vel + (kp * (target - pos) - kv * vel) * h
            else:
                vel = (target - pos) / h
            agent.velocity = (float(vel[0]), float(vel[1]))
            space.step(h)
        self.time_s += dt_s
        self._touch()

    def _touch(self):
        self._version += 1
        self._cache.clear()

    # -- metrics -----------------------------------------------------------------------------
    @property
    def coverage(self):
        """Fraction of the goal T's area covered by the block (gym-pusht's metric), 0..1."""
        if "coverage" not in self._cache:
            self._cache["coverage"] = float(np.clip(self._env._get_coverage(), 0.0, 1.0))
        return self._cache["coverage"]

    @property
    def success(self):
        return self.coverage > self.success_threshold

    @property
    def block_pose(self):
        """(x, y, theta): body origin in task units, angle wrapped to [0, 2pi) as gym-pusht's obs."""
        b = self._env.block
        return np.array([b.position[0], b.position[1], b.angle % (2 * np.pi)])

    @property
    def goal_pose(self):
        return np.array(self._env.goal_pose, dtype=float)

    @property
    def agent_xy(self):
        return np.array(self._env.agent.position)

    def keypoints(self):
        """(8, 2) T keypoints in task units (gym-pusht's order)."""
        return self._env.get_keypoints(self._env._block_shapes)

    # -- rendering ---------------------------------------------------------------------------
    def render_full(self):
        """512x512 RGB top-down view drawn by gym-pusht (goal in green, T, pusher); cached."""
        if "full" not in self._cache:
            self._cache["full"] = surface_to_rgb(self._env._draw())
        return self._cache["full"]

    def render(self, size=(96, 96)):
        """Top-down view resized to size=(H, W); same interpolation as gym-pusht's pixels obs."""
        h, w = int(size[0]), int(size[1])
        full = self.render_full()
        if (h, w) == full.shape[:2]:
            return full.copy()
        return cv2.resize(full, (w, h))

    def render_window(self, center_xy, extent, size=(96, 96)):
        """A square window of the plane, `extent` units wide, centred on center_xy, cut from the
        512x512 view (white beyond the plane's edge)."""
        h, w = int(size[0]), int(size[1])
        cx, cy = float(center_xy[0]), float(center_xy[1])
        sx, sy = w / extent, h / extent
        M = np.array([[sx, 0.0, -(cx - extent / 2) * sx], [0.0, sy, -(cy - extent / 2) * sy]])
        return cv2.warpAffine(self.render_full(), M, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
