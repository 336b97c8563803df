"""Every node's parameters: type, description, allowed range or choices (ROS-free).

The values (defaults) are written once, in config/deploy.yaml; this module says what each one
is. `validate(node, values)` checks a section against its spec (unknown or missing keys, types,
ranges, choices, list lengths) and is used by the nodes at start-up, by the runner before it
starts anything, and by a test on the shipped config. nodes/common.py turns each `Param` into a
ROS ParameterDescriptor, so `ros2 param describe` shows the description and range.

Every parameter is read once at start-up: all are declared read-only, so changing one at run
time (`ros2 param set`) is refused instead of being accepted and ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp_ros.core.scheduler import HORIZON_STARTS, STITCH_AUTO, STITCH_MODES


@dataclass(frozen=True)
class Param:
    type: type                       # bool, int, float, str, or list (with `item` the element type)
    description: str
    range: tuple | None = None       # inclusive (min, max) for numbers
    choices: tuple | None = None     # allowed values for strings
    item: type | None = None         # element type of a list
    length: int | None = None        # exact length of a list
    default_from: str | None = None  # "<node>.<param>": no value in this section, another's is used;
                                     # "checkpoint": always set by the graph from the checkpoint

    def check(self, name: str, value):
        """The value converted to this parameter's type; ValueError saying what is wrong."""
        where = f"parameter {name!r}"
        if self.type is list:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}: expected a list of {self.item.__name__}, got {value!r}")
            if self.length is not None and len(value) != self.length:
                raise ValueError(f"{where}: expected {self.length} values, got {len(value)}")
            return [Param(self.item, "", self.range).check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is str and value is None:
            value = ""
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValueError(f"{where}: expected {self.type.__name__}, got {value!r}")
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"{where}: must be finite, got {value!r}")
        if self.range is not None and not (self.range[0] <= value <= self.range[1]):
            raise ValueError(f"{where}: {value!r} is outside [{self.range[0]}, {self.range[1]}]")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, self.choices))}")
        return value


def _xyz(description):
    return Param(list, description, item=float, length=3, range=(-2.0, 2.0))


NODE_PARAMETERS: dict[str, dict[str, Param]] = {
    "camera_node": {
        "backend": Param(str, "camera interface", choices=("realsense", "sim")),
        "camera_names": Param(list, "camera names, in the checkpoint's order (topic /camera/<name>/image_raw)",
                              item=str),
        "serials": Param(list, "RealSense serial number per camera ('' = the only connected one)", item=str),
        "width": Param(int, "capture width (px)", range=(16, 4096)),
        "height": Param(int, "capture height (px)", range=(16, 4096)),
        "fps": Param(int, "capture rate (frames/s)", range=(1, 300)),
        "exposure_us": Param(float, "fixed exposure (us), the same for demonstrations and deployment; 0 = auto",
                             range=(0.0, 200000.0)),
        "white_balance_k": Param(float, "fixed white balance (K); 0 = auto (the sensor's range is checked at start)",
                                 range=(0.0, 6500.0)),
        "frame_timeout_s": Param(float, "no frame for this long: ERROR on /diagnostics and a pipeline restart (s)",
                                 range=(0.1, 60.0)),
        "max_frame_age_s": Param(float, "frames older than this on arrival are counted as late (s)", range=(0.01, 10.0)),
        "restart_interval_s": Param(float, "wait between pipeline restarts (s)", range=(0.1, 60.0)),
    },
    "robot_state_node": {
        "backend": Param(str, "robot interface", choices=("rtde", "sim")),
        "robot_host": Param(str, "UR controller address"),
        "rate_hz": Param(float, "robot state rate (CB3: 125, e-Series: up to 500)", range=(1.0, 1000.0)),
        "state_timeout_s": Param(float, "the controller's timestamp not advancing for this long is a fault (s)",
                                 range=(0.01, 5.0)),
        "quaternion_reference": Param(list, "published quaternions stay on this one's hemisphere: qx qy qz qw",
                                      item=float, length=4, range=(-1.0, 1.0)),
    },
    "policy_node": {
        "checkpoint": Param(str, "checkpoint directory", default_from="checkpoint"),
        "device": Param(str, "torch device of the network: auto (CUDA when present), cpu, cuda, cuda:N"),
        "max_frame_age_s": Param(float, "a newest camera frame older than this is stale: no chunk (s)",
                                 range=(0.0, 10.0)),
        "heartbeat_hz": Param(float, "rate of /policy/heartbeat while inference is alive", range=(1.0, 1000.0)),
        "torch_threads": Param(int, "CPU threads of the inference process; 0 = cores - 1 (at least 1)",
                               range=(0, 1024)),
        "inference_nice": Param(int, "nice value of the inference process (negative needs CAP_SYS_NICE)",
                                range=(-20, 19)),
        "fixed_pose_max_height_m": Param(float, "a planar (xy) checkpoint's fixed height this far from the measured "
                                               "tool height: no chunk (m)", range=(0.0, 10.0)),
        "fixed_pose_max_angle_rad": Param(float, "a planar or xyz checkpoint's fixed orientation this far from the "
                                                 "measured one: no chunk (rad)", range=(0.0, 3.2)),
        "denoising_steps": Param(int, "DDIM steps per chunk; 0 = the checkpoint's num_inference_steps (more: "
                                      "slower, often closer to the trained distribution)", range=(0, 1000)),
        "inpaint_soft_steps": Param(int, "stitch inpaint: the steps through this many after the chunk's "
                                         "observation that are not certainly executed are pulled toward the "
                                         "committed path (weight decaying linearly; latency takes them first); "
                                         "0 = freeze only what executes before arrival",
                                    range=(0, 64)),
        "inpaint_warm_start": Param(float, "stitch inpaint: share of the denoising steps skipped by starting from "
                                           "the committed path, noised (keeps the plan's mode; fewer network "
                                           "evaluations); 0 = sample from pure noise", range=(0.0, 0.9)),
        "inpaint_guidance": Param(float, "stitch inpaint: the pulled steps are guided through the network "
                                         "(real-time chunking's pseudo-inverse guidance, its weight capped at "
                                         "this) instead of replaced; 0 = replacement. Costs a backward pass per "
                                         "denoising step", range=(0.0, 100.0)),
        "inpaint_candidates": Param(int, "stitch inpaint: chunks sampled per request (one batch, independent "
                                         "noise); the one whose free steps leave the frozen prefix with the "
                                         "smallest turn runs. 1 = one sample. Inference time grows with it",
                                    range=(1, 64)),
        "inpaint_demo_motion": Param(bool, "stitch inpaint: where a chunk's free steps leave the committed path "
                                           "they move no faster and turn no sharper than any demonstration did "
                                           "(the checkpoint's demo_motion; a checkpoint without one is "
                                           "unaffected)"),
        "inference_realtime_priority": Param(
            int, "SCHED_RR priority of the inference process when a core stays free for the rest "
                 "(above the streaming nodes' 10, below the servo loop's); 0 = normal scheduling", range=(0, 99)),
    },
    "action_scheduler_node": {
        "action_horizon": Param(int, "Ta: waypoints of each chunk to execute; 0 = the checkpoint's (the one "
                                     "it was exported with, `dp-ros export --action-horizon`, else the Ta it "
                                     "was trained with). The graph passes the resolved value, at most "
                                     "Tp - To + 1", range=(0, 1000)),
        "obs_horizon": Param(int, "To: observation steps of the checkpoint (chunk index To-1 is the observation's "
                                  "instant)", range=(1, 1000), default_from="checkpoint"),
        "dt_s": Param(float, "control step of the checkpoint (s)", range=(1e-3, 10.0), default_from="checkpoint"),
        "horizon_start": Param(str, "where each chunk's Ta executed waypoints are counted from: arrival (the "
                                    "first Ta still ahead when it arrives) or observation (chunk indices To.."
                                    "To+Ta-1: latency shortens what runs instead of lengthening the open loop)",
                               choices=HORIZON_STARTS),
        "exec_latency_s": Param(float, "waypoints closer than this to now are dropped as too late (s)",
                                range=(0.0, 1.0)),
        "stitch": Param(str, "how a new chunk joins the executing one (inpaint: requests carry the committed "
                             "path and the policy samples the chunk to continue it; auto: the mode the "
                             "checkpoint recommends, else inpaint)",
                        choices=(*STITCH_MODES, STITCH_AUTO)),
        "blend_steps": Param(int, "waypoints over which a new chunk is blended in", range=(0, 100)),
        "publish_rate_hz": Param(float, "rate of /servo/waypoints", range=(1.0, 1000.0)),
        "policy_timeout_s": Param(float, "no policy heartbeat for this long: stop streaming, the servo holds (s)",
                                  range=(0.01, 10.0)),
        "request_timeout_s": Param(float, "a request unanswered for this long is lost: ask again (s)",
                                   range=(0.01, 60.0)),
        "autostart": Param(bool, "stream as soon as chunks arrive (false: wait for /scheduler/enable)"),
    },
    "ur5_servo_node": {
        "backend": Param(str, "robot interface", choices=("rtde", "sim")),
        "robot_host": Param(str, "UR controller address"),
        "rate_hz": Param(float, "servo loop rate (CB3: 125, e-Series: 500)", range=(1.0, 1000.0)),
        "source": Param(str, "the commanding source at start: policy (waypoints) or teleop (targets); "
                             "switched by /servo/use_policy, /servo/use_teleop", choices=("policy", "teleop")),
        "waypoint_publisher": Param(str, "the only node whose /servo/waypoints are followed ('' = any)"),
        "target_publisher": Param(str, "the only node whose /servo/target_pose is followed ('' = any)"),
        "max_waypoints": Param(int, "a waypoint message with more points is refused unread", range=(1, 100000)),
        "max_measured_age_s": Param(float, "a measured pose older than this while following latches a fault; "
                                           "resuming needs one this fresh (s)", range=(0.01, 10.0)),
        "lookahead_time": Param(float, "servoL lookahead time (s)", range=(0.03, 0.2)),
        "gain": Param(float, "servoL proportional gain", range=(100.0, 2000.0)),
        "apply_tcp_offset": Param(bool, "set tcp_offset on the robot when connecting (setTcp); false: the pendant's TCP"),
        "tcp_offset": Param(list, "TCP in the flange frame: x y z (m) rx ry rz (rotation vector); the workspace "
                                  "box refers to this point", item=float, length=6, range=(-2.0, 6.3)),
        "payload_kg": Param(float, "payload mass set on connect (setPayload); negative: the pendant's", range=(-1.0, 20.0)),
        "payload_cog": Param(list, "payload centre of gravity in the flange frame (m)", item=float, length=3,
                             range=(-1.0, 1.0)),
        "watchdog_hz": Param(float, "ur_rtde watchdog: the robot program stops when the servo falls silent for "
                                    "longer than its period; 0 = off", range=(0.0, 500.0)),
        "watchdog_timeout_s": Param(float, "no waypoint message for this long: hold (s)", range=(0.01, 10.0)),
        "realtime_priority": Param(int, "SCHED_FIFO priority of the servo loop; 0 = normal scheduling",
                                   range=(0, 99)),
        "backend_call_timeout_s": Param(float, "a servo tick's calls to the robot (its fault check and command) "
                                               "still unanswered after this long latch a fault: a client library "
                                               "stuck on a lost connection stops the loop without a word (s)",
                                        range=(0.05, 10.0)),
        "workspace_min": _xyz("lower corner of the workspace box, base frame (m): never commanded outside"),
        "workspace_max": _xyz("upper corner of the workspace box, base frame (m): never commanded outside"),
        "max_lin_speed": Param(float, "TCP speed limit (m/s)", range=(0.001, 3.0)),
        "max_lin_acc": Param(float, "TCP acceleration limit (m/s^2)", range=(0.01, 20.0)),
        "max_ang_speed": Param(float, "TCP rotation speed limit (rad/s)", range=(0.01, 6.3)),
        "orientation_reference": Param(list, "tool orientation the tilt limit is measured from: qx qy qz qw",
                                       item=float, length=4, range=(-1.0, 1.0)),
        "orientation_limit_rad": Param(float, "largest angle of the commanded tool orientation from "
                                              "orientation_reference (rad); 0 = no limit", range=(0.0, math.pi)),
        "move_to_start": Param(bool, "a start pose is configured: /servo/move_to_start moves the arm there "
                                     "slowly, and `dp-ros deploy --hardware` does so before the policy streams"),
        "start_pose": Param(list, "the start pose, base frame: x y z (m) qx qy qz qw; must lie inside the "
                                  "workspace box and the orientation limit (checked at start-up)",
                            item=float, length=7, range=(-2.0, 2.0)),
        "start_move_speed": Param(float, "TCP speed of the move to start_pose (m/s, at most max_lin_speed); "
                                         "it rotates at the same fraction of max_ang_speed", range=(0.001, 3.0)),
    },
    "sim_world_node": {
        "task": Param(str, "simulated task", choices=("reach", "pusht")),
        "seed": Param(int, "episode k uses seed + k", range=(0, 2**31 - 1)),
        "camera_names": Param(list, "rendered cameras", item=str),
        "image_height": Param(int, "rendered image height (px)", range=(8, 4096)),
        "image_width": Param(int, "rendered image width (px)", range=(8, 4096)),
        "camera_fps": Param(float, "render rate (frames/s)", range=(1.0, 300.0)),
        "physics_rate_hz": Param(float, "physics and robot state rate", range=(10.0, 2000.0)),
        "task_xy_min": Param(list, "robot workspace corner (m) that maps onto the task plane's",
                             item=float, length=2, range=(-2.0, 2.0)),
        "task_xy_max": Param(list, "opposite corner (m)", item=float, length=2, range=(-2.0, 2.0)),
        "home_pose": Param(list, "TCP pose at the start of an episode: x y z qx qy qz qw",
                           item=float, length=7, range=(-2.0, 2.0)),
        "episode_timeout_s": Param(float, "an episode ends on success or after this long (s)", range=(1.0, 3600.0)),
    },
    "teleop_node": {
        "backend": Param(str, "operator input: spacenav (spacenavd + libspnav) or scripted (sim expert)",
                         choices=("spacenav", "scripted")),
        "rate_hz": Param(float, "target updates = control steps of the recorded data", range=(1.0, 1000.0)),
        "max_speed_m_s": Param(float, "target speed at full deflection (m/s)", range=(0.001, 3.0)),
        "max_rot_speed_rad_s": Param(float, "target rotation speed at full deflection (rad/s)", range=(0.0, 6.3)),
        "deadzone": Param(float, "deflection below this fraction is ignored", range=(0.0, 0.99)),
        "planar": Param(bool, "table-plane motion; hold button 0 to unlock height and rotation"),
        "output_dir": Param(str, "one rosbag2 (MCAP) directory per episode"),
        "expert_seed": Param(int, "scripted backend: the expert's own randomness", range=(0, 2**31 - 1)),
        "expert_finish_coverage": Param(float, "scripted backend, Push-T: past success the expert keeps refining "
                                               "up to this goal coverage (0 = stop at success); the lockstep "
                                               "recorder ends the episode when it is done", range=(0.0, 1.0)),
        "expert_obs_delay_s": Param(float, "scripted backend: the expert acts on the world as it was this long "
                                           "ago, in whole control steps (demonstrations of a strategy that "
                                           "copes with a policy's inference latency); 0 = fresh",
                                    range=(0.0, 2.0)),
        "full_scale": Param(float, "raw SpaceMouse deflection that maps to full speed", range=(1.0, 2000.0)),
        "yaw_offset_deg": Param(float, "the device's frame rotated about the vertical into the robot's (deg)",
                                range=(-180.0, 180.0)),
        "quiet_zero_s": Param(float, "a deflection without events for this long is zeroed (as the ROS spacenav "
                                     "driver does)", range=(0.02, 5.0)),
        "sim": Param(bool, "recording in simulation: the scripted expert drives the sim world (set by the graph)"),
        "workspace_min": Param(list, "the servo's workspace lower corner: the target is kept inside (m)", item=float,
                               length=3, range=(-2.0, 2.0), default_from="ur5_servo_node.workspace_min"),
        "workspace_max": Param(list, "the servo's workspace upper corner (m)", item=float, length=3,
                               range=(-2.0, 2.0), default_from="ur5_servo_node.workspace_max"),
        "camera_names": Param(list, "recorded cameras", item=str, default_from="camera_node.camera_names"),
        "task": Param(str, "task of the scripted expert and the episode metadata", choices=("reach", "pusht"),
                      default_from="sim_world_node.task"),
        "objects": Param(str, "tracked objects to record, comma-separated names (topic /object/<name>/pose); "
                              "'' = none (the sim graph sets Push-T's T)"),
        "task_xy_min": Param(list, "the sim world's task plane corner (m)", item=float, length=2,
                             range=(-2.0, 2.0), default_from="sim_world_node.task_xy_min"),
        "task_xy_max": Param(list, "opposite corner (m)", item=float, length=2, range=(-2.0, 2.0),
                             default_from="sim_world_node.task_xy_max"),
        # the cell's set-up, written into each episode's metadata (teleop does not apply them)
        "apply_tcp_offset": Param(bool, "the servo sets tcp_offset on the robot (episode metadata)",
                                  default_from="ur5_servo_node.apply_tcp_offset"),
        "tcp_offset": Param(list, "the servo's TCP in the flange frame: x y z rx ry rz (episode metadata)",
                            item=float, length=6, range=(-2.0, 6.3), default_from="ur5_servo_node.tcp_offset"),
        "payload_kg": Param(float, "the servo's payload mass, negative: the pendant's (episode metadata)",
                            range=(-1.0, 20.0), default_from="ur5_servo_node.payload_kg"),
        "payload_cog": Param(list, "the servo's payload centre of gravity (m, episode metadata)", item=float,
                             length=3, range=(-1.0, 1.0), default_from="ur5_servo_node.payload_cog"),
        "exposure_us": Param(float, "the cameras' fixed exposure, 0 = auto (episode metadata)",
                             range=(0.0, 200000.0), default_from="camera_node.exposure_us"),
        "white_balance_k": Param(float, "the cameras' fixed white balance, 0 = auto (episode metadata)",
                                 range=(0.0, 6500.0), default_from="camera_node.white_balance_k"),
    },
}


def defaults(node: str, config: dict) -> dict:
    """The node's start-up values from a loaded parameter file: its own section, plus the values it
    borrows from other sections (default_from). Values set by the graph are absent."""
    spec = NODE_PARAMETERS[node]
    out = dict(config.get(node, {}))
    for name, p in spec.items():
        if p.default_from and "." in p.default_from:
            other, key = p.default_from.split(".")
            if key in config.get(other, {}):
                out.setdefault(name, config[other][key])
    return out


def validate(node: str, values: dict, complete: bool = True) -> dict:
    """Check a node's values against its spec; returns them converted. complete=True: every
    parameter must be present (those set by the graph included)."""
    if node not in NODE_PARAMETERS:
        raise ValueError(f"unknown node {node!r} (expected one of {', '.join(NODE_PARAMETERS)})")
    spec = NODE_PARAMETERS[node]
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ValueError(f"{node}: unknown parameter(s) {unknown} (a misspelt name is never ignored)")
    if complete:
        missing = sorted(set(spec) - set(values))
        if missing:
            raise ValueError(f"{node}: missing parameter(s) {missing}")
    return {k: spec[k].check(f"{node}.{k}", v) for k, v in values.items()}
