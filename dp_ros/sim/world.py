"""The simulated world: a UR5 whose TCP drives the pusher of a planar task, plus cameras.

Everything here is ROS-free; the world node wraps `SimWorld` and publishes what the real
hardware would (camera images, TCP pose, joint states) so every other node runs unchanged.
Poses are numpy (7,) [x, y, z, qx, qy, qz, qw] in the robot base frame, metres.
"""

import numpy as np
from scipy.spatial.transform import Rotation

from dp_ros.core.robot_features import planar_pose

from . import ur5_kinematics as kin
from .pusht import TASK_SIZE, PushTTask
from .reach import ReachTask

# The objects each task's world publishes poses of (topics.OBJECT_POSE), as a tracker would.
TASK_OBJECTS = {"pusht": ("T",), "reach": ()}

# Tool pointing straight down (180 deg about base x), the usual pushing orientation.
TOOL_DOWN_QUAT = np.array([1.0, 0.0, 0.0, 0.0])


def episode_scores(episodes: list[dict]) -> dict:
    """The task scores of a set of evaluated episodes (dicts with success, final_coverage,
    max_coverage, dropped_waypoints), the same for the real-time and the lockstep evaluation."""
    return dict(
        success_rate=round(sum(e["success"] for e in episodes) / len(episodes), 3),
        mean_final_coverage=round(float(np.mean([e["final_coverage"] for e in episodes])), 4),
        # The Diffusion Policy paper's Push-T score: each episode's best coverage, averaged.
        mean_max_coverage=round(float(np.mean([e["max_coverage"] for e in episodes])), 4),
        dropped_waypoints=int(sum(e["dropped_waypoints"] for e in episodes)),
    )


def _as_pose(pose):
    p = np.asarray(pose, dtype=float).reshape(-1)
    if p.shape != (7,):
        raise ValueError(f"pose must be (7,) [x, y, z, qx, qy, qz, qw], got shape {p.shape}")
    n = np.linalg.norm(p[3:])
    if not np.isfinite(p).all() or n < 1e-9:
        raise ValueError(f"invalid pose {p}")
    p[3:] /= n
    return p


class TaskPlaneMapping:
    """Robot base-frame metres <-> task-plane units (0..task_size on both axes).

    task x grows with robot x; task y grows with robot -y. That is the image a real camera above
    the table sees (image right = +x, image down = -y), so the mapping keeps handedness and the
    rendered "top" view is physically plausible. Anisotropic boxes are allowed (the task physics
    is in task units; the robot then moves different distances per unit along x and y).
    """

    def __init__(self, workspace_xy_min_m=(0.3, -0.2), workspace_xy_max_m=(0.7, 0.2), task_size=TASK_SIZE):
        self.xy_min = np.asarray(workspace_xy_min_m, dtype=float).reshape(2)
        self.xy_max = np.asarray(workspace_xy_max_m, dtype=float).reshape(2)
        if np.any(self.xy_max <= self.xy_min):
            raise ValueError("workspace_xy_max_m must exceed workspace_xy_min_m on both axes")
        self.task_size = float(task_size)
        self.units_per_m = self.task_size / (self.xy_max - self.xy_min)

    def to_task(self, xy_m):
        """(..., 2) metres -> (..., 2) task units."""
        xy = np.asarray(xy_m, dtype=float)
        u = (xy[..., 0] - self.xy_min[0]) * self.units_per_m[0]
        v = (self.xy_max[1] - xy[..., 1]) * self.units_per_m[1]
        return np.stack([u, v], axis=-1)

    def to_robot(self, task_xy):
        """(..., 2) task units -> (..., 2) metres."""
        t = np.asarray(task_xy, dtype=float)
        x = self.xy_min[0] + t[..., 0] / self.units_per_m[0]
        y = self.xy_max[1] - t[..., 1] / self.units_per_m[1]
        return np.stack([x, y], axis=-1)

    def contains(self, xy_m):
        xy = np.asarray(xy_m, dtype=float)
        return bool(np.all((xy >= self.xy_min) & (xy <= self.xy_max)))


class SimUR5:
    """A UR5 under servoL-like control: the TCP tracks the latest servo target.

    Tracking is first order with time constant `time_constant_s` (the smoothing servoL's
    lookahead gives), capped at `max_speed` m/s and `max_angular_speed` rad/s, so commands that
    jump are followed at bounded speed. Joint positions come from the UR5 analytic IK (UR's DH
    parameters, flange = TCP, no tool offset), taking the branch nearest the previous joints
    (initially the elbow-up, tool-down home) so they move continuously. If a pose is out of reach
    the joints keep their last valid value and `ik_ok` is False.
    """

    def __init__(self, initial_pose=None, max_speed=0.5, max_angular_speed=1.5, time_constant_s=0.05,
                 q_ref=kin.HOME_Q):
        if initial_pose is None:
            initial_pose = np.concatenate([[0.5, 0.0, 0.1], TOOL_DOWN_QUAT])
        self.max_speed = float(max_speed)
        self.max_angular_speed = float(max_angular_speed)
        self.time_constant_s = float(time_constant_s)
        self._q = np.asarray(q_ref, dtype=float).copy()
        self.ik_ok = True
        self.reset(initial_pose)

    def reset(self, pose):
        """Teleport the TCP to pose (at rest) and hold there."""
        self._pose = _as_pose(pose)
        self._target = self._pose.copy()
        self._joints_valid = False
        # Re-solve from home so a teleport never inherits a far-away branch.
        self._q = kin.HOME_Q.copy()

    def servo(self, target_pose):
        self._target = _as_pose(target_pose)

    def stop(self):
        """Hold the current pose."""
        self._target = self._pose.copy()

    def step(self, dt):
        dt = float(dt)
        if dt <= 0:
            return
        frac = 1.0 - np.exp(-dt / self.time_constant_s) if self.time_constant_s > 0 else 1.0
        err = self._target[:3] - self._pose[:3]
        move = err * frac
        n = np.linalg.norm(move)
        if n > self.max_speed * dt:
            move *= self.max_speed * dt / n
        pos = self._pose[:3] + move

        r_cur = Rotation.from_quat(self._pose[3:])
        rv = (Rotation.from_quat(self._target[3:]) * r_cur.inv()).as_rotvec()
        ang = np.linalg.norm(rv)
        quat = self._pose[3:]
        if ang > 1e-12:
            step_ang = min(ang * frac, self.max_angular_speed * dt)
            quat = (Rotation.from_rotvec(rv * (step_ang / ang)) * r_cur).as_quat()
            if np.dot(quat, self._pose[3:]) < 0:  # keep the quaternion sign continuous
                quat = -quat
        self._pose = np.concatenate([pos, quat])
        self._joints_valid = False

    def tcp_pose(self):
        return self._pose.copy()

    def target_pose(self):
        return self._target.copy()

    def joint_positions(self):
        """(6,) joint angles, radians (base, shoulder, elbow, wrist 1-3)."""
        if not self._joints_valid:
            T = np.eye(4)
            T[:3, :3] = Rotation.from_quat(self._pose[3:]).as_matrix()
            T[:3, 3] = self._pose[:3]
            q = kin.ik_nearest(T, self._q)
            self.ik_ok = q is not None
            if q is not None:
                self._q = q
            self._joints_valid = True
        return self._q.copy()


class SimWorld:
    """A SimUR5 whose TCP (x, y) is the task's pusher, with "top" and "wrist" cameras.

    - "top": the task's top-down view (the whole 512x512 task plane).
    - "wrist": a camera looking down from the tool: a `wrist_view_units`-wide window of the
      same plane centred on the pusher (white beyond the plane's edge).
    The TCP height and orientation do not affect the task. On reset the TCP is teleported to
    `home_pose` if given (the pusher starts under it), else above the task's seeded random pusher
    start at `tcp_height_m`, tool down. A servo loop must take the robot's pose after a reset as
    its new hold target, or it will drive back to its stale one.
    """

    CAMERAS = ("top", "wrist")

    def __init__(self, task_name="pusht", mapping=None, camera_names=("top",), image_size=(96, 96), seed=0,
                 tcp_height_m=0.1, tool_quat=TOOL_DOWN_QUAT, robot_kwargs=None, task_kwargs=None,
                 physics_dt=0.01, wrist_view_units=192.0, home_pose=None):
        self.task_name = task_name
        self.mapping = mapping if mapping is not None else TaskPlaneMapping()
        task_kwargs = dict(task_kwargs or {})
        # The robot already tracks its commands; the pusher is rigidly the TCP.
        task_kwargs.setdefault("pusher_tracking", "kinematic")
        task_kwargs.setdefault("physics_dt", physics_dt)
        if task_name == "pusht":
            self.task = PushTTask(**task_kwargs)
        elif task_name == "reach":
            self.task = ReachTask(**task_kwargs)
        else:
            raise ValueError(f"task_name must be 'pusht' or 'reach', got {task_name!r}")
        self.camera_names = tuple(camera_names)
        for c in self.camera_names:
            if c not in self.CAMERAS:
                raise ValueError(f"unknown camera {c!r}; available: {self.CAMERAS}")
        if isinstance(image_size, dict):
            self.image_sizes = {c: tuple(int(v) for v in image_size[c]) for c in self.camera_names}
        else:
            self.image_sizes = {c: (int(image_size[0]), int(image_size[1])) for c in self.camera_names}
        self.tcp_height_m = float(tcp_height_m)
        self.tool_quat = np.asarray(tool_quat, dtype=float)
        self.physics_dt = float(physics_dt)
        self.wrist_view_units = float(wrist_view_units)
        self.home_pose = None if home_pose is None else _as_pose(home_pose)
        self.robot = SimUR5(self._home_pose(np.array([256.0, 256.0])), **(robot_kwargs or {}))
        self._seed_rng = np.random.default_rng(seed)
        self.time_s = 0.0
        self.episode_seed = None
        self.reset(seed)

    @classmethod
    def from_params(cls, p: dict) -> "SimWorld":
        """As sim_world_node builds it from its parameters (also the lockstep evaluator's world)."""
        mapping = TaskPlaneMapping(np.asarray(p["task_xy_min"]), np.asarray(p["task_xy_max"]))
        return cls(p["task"], mapping, list(p["camera_names"]), (p["image_height"], p["image_width"]),
                   seed=p["seed"], home_pose=np.asarray(p["home_pose"], dtype=np.float64),
                   physics_dt=1.0 / p["physics_rate_hz"])

    def _home_pose(self, task_xy):
        xy = self.mapping.to_robot(task_xy)
        return np.concatenate([xy, [self.tcp_height_m], self.tool_quat])

    def reset(self, seed=None):
        """New episode; seed=None draws the next seed from the world's own seeded sequence."""
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        if self.home_pose is not None:
            self.task.reset(self.episode_seed, agent_xy=self.mapping.to_task(self.home_pose[:2]))
            self.robot.reset(self.home_pose)
        else:
            self.task.reset(self.episode_seed)
            self.robot.reset(self._home_pose(self.task.agent_xy))
        self.time_s = 0.0
        self.max_coverage = self.task.coverage
        return self.task_state()

    def step(self, dt):
        """Advance robot and task by dt seconds, in physics substeps of at most physics_dt."""
        dt = float(dt)
        if dt <= 0:
            return
        n = max(1, int(np.ceil(dt / self.physics_dt - 1e-9)))
        h = dt / n
        for _ in range(n):
            self.robot.step(h)
            self.task.step(self.mapping.to_task(self.robot.tcp_pose()[:2]), h)
        self.time_s += dt
        self.max_coverage = max(self.max_coverage, self.task.coverage)

    # -- robot passthrough -------------------------------------------------------------------
    def servo(self, pose):
        self.robot.servo(pose)

    def stop(self):
        self.robot.stop()

    def tcp_pose(self):
        return self.robot.tcp_pose()

    def joints(self):
        return self.robot.joint_positions()

    # -- sensing -----------------------------------------------------------------------------
    def object_poses(self) -> dict:
        """{name: (7,) pose in the base frame} of the tracked objects, as a tracker on the real cell
        would publish them: Push-T's T (its body origin, on the table at z 0, turned about z)."""
        if "T" not in TASK_OBJECTS[self.task_name]:
            return {}
        x, y, theta = self.task.block_pose
        # task y points the other way from robot y: a turn by theta in the task is -theta in the base frame
        bx, by = self.mapping.to_robot(np.array([x, y]))
        return {"T": planar_pose(bx, by, -theta)}

    def render(self, camera="top"):
        """uint8 HxWx3 RGB image of the named camera at its configured size."""
        if camera not in self.image_sizes:
            raise KeyError(f"camera {camera!r} not configured; have {tuple(self.image_sizes)}")
        h, w = self.image_sizes[camera]
        if camera == "top":
            return self.task.render(size=(h, w))
        return self.task.render_window(self.task.agent_xy, self.wrist_view_units, size=(h, w))

    def task_state(self):
        """Plain-Python summary of the episode (JSON-friendly: floats, bools, lists)."""
        t = self.task
        s = {
            "task": self.task_name,
            "seed": self.episode_seed,
            "episode_time_s": float(self.time_s),
            "coverage": float(t.coverage),
            "max_coverage": float(self.max_coverage),
            "success": bool(t.success),
            "pusher_xy": [float(v) for v in t.agent_xy],
            "tcp_xy_m": [float(v) for v in self.robot.tcp_pose()[:2]],
        }
        if self.task_name == "pusht":
            s["block_pose"] = [float(v) for v in t.block_pose]
            s["goal_pose"] = [float(v) for v in t.goal_pose]
            s["block_xy_m"] = [float(v) for v in self.mapping.to_robot(t.block_pose[:2])]
        else:
            s["target_xy"] = [float(v) for v in t.target_xy]
            s["target_xy_m"] = [float(v) for v in self.mapping.to_robot(t.target_xy)]
            s["hold_s"] = float(t.hold_s)
        return s
