"""Expert demonstrations in sim time: the teleop graph's logic without the middleware, written to
the episode bags `dp-ros record` writes (same topics, message types, stamps and metadata keys), so
`dp-ros convert` and everything after it cannot tell them apart.

The world, the scripted expert, the SpaceMouse mapping (core.teleop.TeleopMapper) and the servo
(core.servo_controller.ServoController) are the graph's own classes built from the graph's own
parameters (graph.node_params); time advances by servo ticks and nothing waits for a clock, so a
2-core machine records Push-T many times faster than real time (`dp-ros record --lockstep`).

What differs from recording through the graph, on purpose:
  - no delivery delays or timer jitter: every stream at its nominal rate, stamps exact;
  - no /robot/joint_states (its inverse kinematics would cost a third of the time);
  - the expert reads the task state fresh at each control step (the graph's teleop node sees
    /sim/task/state at 10 Hz), and the world steps in servo ticks.
Messages are built and serialized with the rosbags typestore (no rclpy here).
"""

from __future__ import annotations

import json
import time

import numpy as np

from dp_ros import topics
from dp_ros.core.robot_features import object_names
from dp_ros.core.servo_controller import Action, ServoController
from dp_ros.core.teleop import TeleopMapper
from dp_ros.data.bag_writer import EpisodeBagWriter, typestore
from dp_ros.sim.experts import expert_options, make_expert
from dp_ros.sim.world import SimWorld, TaskPlaneMapping

SETTLE_S = 0.5       # the arm stands still at the start, as record_episode's settle
TAIL_S = 0.5         # and a little of the final hold is kept
BASE_FRAME = "base"
POSE = "geometry_msgs/msg/PoseStamped"


class _Messages:
    """CDR bytes of the graph's message types, from the rosbags typestore."""

    def __init__(self):
        self.ts = ts = typestore()
        self.T = {name: ts.types[name] for name in (
            "builtin_interfaces/msg/Time", "std_msgs/msg/Header", "geometry_msgs/msg/Point",
            "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Pose", POSE, "sensor_msgs/msg/Image",
            "diagnostic_msgs/msg/DiagnosticStatus", "diagnostic_msgs/msg/KeyValue")}

    def header(self, stamp_ns: int, frame_id: str):
        sec, nsec = divmod(int(stamp_ns), 10**9)
        return self.T["std_msgs/msg/Header"](stamp=self.T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                             frame_id=frame_id)

    def pose(self, pose, stamp_ns: int) -> bytes:
        T = self.T
        p = [float(v) for v in pose]
        msg = T[POSE](header=self.header(stamp_ns, BASE_FRAME), pose=T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
            orientation=T["geometry_msgs/msg/Quaternion"](x=p[3], y=p[4], z=p[5], w=p[6])))
        return bytes(self.ts.serialize_cdr(msg, POSE))

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> bytes:
        h, w = rgb.shape[:2]
        msg = self.T["sensor_msgs/msg/Image"](header=self.header(stamp_ns, frame_id), height=h, width=w,
                                              encoding="rgb8", is_bigendian=0, step=w * 3,
                                              data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1))
        return bytes(self.ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def task_state(self, state: dict, episode: int) -> bytes:
        kv = self.T["diagnostic_msgs/msg/KeyValue"]
        values = [kv(key=str(k), value=json.dumps(v)) for k, v in state.items()]
        values.append(kv(key="episode", value=str(episode)))
        msg = self.T["diagnostic_msgs/msg/DiagnosticStatus"](level=0, name="sim_task", message=str(state["task"]),
                                                             hardware_id=f"episode {episode}", values=values)
        return bytes(self.ts.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticStatus"))


class LockstepRecorder:
    """Records expert episodes of the teleop graph's sim world in sim time. `params` are the teleop
    graph's node parameters (graph.node_params(graph.teleop_graph(sim=True, ...)))."""

    def __init__(self, params: dict, out_dir):
        self.params = params
        self.out_dir = out_dir
        w, tp, servo = params["sim_world_node"], params["teleop_node"], params["ur5_servo_node"]
        self.world = SimWorld.from_params(w)
        self.task = w["task"]
        self.dt_ns = int(round(1e9 / tp["rate_hz"]))
        self.tick_ns = int(round(1e9 / servo["rate_hz"]))
        self.frame_ns = int(round(1e9 / w["camera_fps"]))
        self.state_ns = int(round(1e9 / params["robot_state_node"]["rate_hz"]))
        self.task_ns = 100_000_000                 # the sim world node's task-state rate
        mapping = TaskPlaneMapping(np.asarray(w["task_xy_min"]), np.asarray(w["task_xy_max"]))
        self.expert = make_expert(self.task, mapping, tp["max_speed_m_s"], 1.0 / tp["rate_hz"], int(tp["expert_seed"]),
                                  **expert_options(tp))
        self.cameras = list(tp["camera_names"])
        self.objects = object_names(tp["objects"])
        self.msgs = _Messages()
        # no joint states: the sim's inverse kinematics would be a third of the time (the converter
        # names the missing topic if a store asks for joints)
        self.topics = {topics.ROBOT_TCP_POSE: POSE, topics.SERVO_TARGET: POSE, topics.SERVO_COMMAND: POSE,
                       topics.SIM_TASK_STATE: "diagnostic_msgs/msg/DiagnosticStatus"}
        self.topics.update({topics.CAMERA_IMAGE.format(name=c): "sensor_msgs/msg/Image" for c in self.cameras})
        self.topics.update({topics.OBJECT_POSE.format(name=n): POSE for n in self.objects})

    def seed_of(self, index: int) -> int:
        """Episode `index` (0-based) uses the sim world node's seed + episode number."""
        return int(self.params["sim_world_node"]["seed"]) + index + 1

    def record(self, index: int, lead_in=None) -> dict:
        """Record episode `index`. lead_in: None, or a callable(index) -> dict that first drives
        this recorder's world from the episode's seed (a PolicyLeadIn: the expert then takes over
        where the policy left it); an episode whose lead-in already succeeded is not recorded."""
        p, world = self.params, self.world
        seed = self.seed_of(index)
        lead = None
        if lead_in is None:
            world.reset(seed)
        else:
            lead = lead_in(index)
            if lead["policy_success"]:
                return {"seed": seed, "success": False, "skipped": "the policy succeeded before the takeover",
                        "takeover": lead, "path": None, "duration_s": 0.0,
                        "final_coverage": round(float(world.task.coverage), 4),
                        "max_coverage": round(float(world.max_coverage), 4)}
        tp = p["teleop_node"]
        mapper = TeleopMapper(tp["workspace_min"], tp["workspace_max"], tp["max_speed_m_s"],
                              tp["max_rot_speed_rad_s"], tp["deadzone"], tp["planar"])
        servo = ServoController.from_params(p["ur5_servo_node"])
        self.expert.reset(seed + int(tp["expert_seed"]))
        timeout_s = float(p["sim_world_node"]["episode_timeout_s"])
        start_ns = time.time_ns()
        name = f"episode_{time.strftime('%Y%m%d_%H%M%S')}_{seed:06d}"
        meta = {"task": self.task, "backend": "scripted", "sim": True, "lockstep": True,
                "control_frequency_hz": tp["rate_hz"], "camera_names": self.cameras, "objects": self.objects,
                "parameters": dict(tp), "seed": seed, "start_time_ns": start_ns}
        if lead is not None:
            meta["takeover"] = lead
        writer = EpisodeBagWriter(self.out_dir, name, self.topics, meta, start_time_ns=start_ns)
        m = self.msgs

        def sense(now, rel):
            pose = world.tcp_pose()
            servo.on_measured(pose, now)
            if rel % self.state_ns < self.tick_ns:
                writer.write(topics.ROBOT_TCP_POSE, now, m.pose(pose, now))
            if rel % self.frame_ns < self.tick_ns:
                for cam in self.cameras:
                    writer.write(topics.CAMERA_IMAGE.format(name=cam), now,
                                 m.image(world.render(cam), now, f"sim_{cam}"))
                poses = world.object_poses()
                for n in self.objects:
                    writer.write(topics.OBJECT_POSE.format(name=n), now, m.pose(poses[n], now))
            if rel % self.task_ns < self.tick_ns:
                writer.write(topics.SIM_TASK_STATE, now, m.task_state(world.task_state(), index + 1))

        now, rel = start_ns, 0
        # the recording starts after the settle (after a lead-in, at once: the world is mid-episode)
        settle_end = int(SETTLE_S * 1e9) if lead is None else 0
        while rel < settle_end:
            servo.on_measured(world.tcp_pose(), now)
            world.step(self.tick_ns * 1e-9)
            now, rel = now + self.tick_ns, rel + self.tick_ns
        world.time_s = 0.0
        world.max_coverage = world.task.coverage
        mapper.reset(world.tcp_pose())
        servo.on_measured(world.tcp_pose(), now)
        if servo.set_enabled(True, now):
            raise RuntimeError("the servo refused to follow at the start of a lockstep episode")
        rel = 0
        done_at = None
        success = False
        while True:
            sense(now, rel)
            if rel % self.dt_ns < self.tick_ns:
                # stamped before the expert plans, as the teleop node does: the target is this tick's
                state = world.task_state()
                event = self.expert.act(state, world.tcp_pose(), mapper.target[:2])
                step = mapper.step(event.translation, event.rotation, event.buttons, self.dt_ns * 1e-9)
                servo.on_target(step.target, now)
                writer.write(topics.SERVO_TARGET, now, m.pose(step.target, now))
            cmd = servo.step(now)
            if cmd is not None:
                if cmd.action is Action.SERVO:
                    world.servo(cmd.pose)
                elif cmd.action is Action.STOP:
                    world.stop()
                writer.write(topics.SERVO_COMMAND, now, m.pose(cmd.pose, now))
            world.step(self.tick_ns * 1e-9)
            now, rel = now + self.tick_ns, rel + self.tick_ns
            success = success or bool(world.task.success)
            # the expert is done at success, or past it at its finish coverage
            if done_at is None and ((success and self.expert.done) or world.time_s >= timeout_s):
                done_at = rel
            if done_at is not None and rel - done_at >= int(TAIL_S * 1e9):
                break
        path = writer.close(success=success, end_time_ns=now)
        out = {"seed": seed, "success": success, "path": str(path), "duration_s": round(done_at * 1e-9, 3),
               "final_coverage": round(float(world.task.coverage), 4),
               "max_coverage": round(float(world.max_coverage), 4)}
        if lead is not None:
            out["takeover"] = lead
        return out


class PolicyLeadIn:
    """A checkpoint's policy runs each episode first, in lockstep with an injected inference delay,
    for a random time in after_s; the recorder's expert then takes over from the state it left, and
    only the expert is recorded. Demonstrations so start where the deployed policy goes, not only
    where the expert goes: the data of DAgger (Ross et al., 2011), gathered by intervention as an
    operator taking over with the SpaceMouse would (HG-DAgger, Kelly et al., 2019). The policy runs
    as deployed (its exported stitch and action horizon, the config's settings); the lead-in time
    is drawn from the episode's world seed, so a run is reproducible."""

    def __init__(self, recorder: LockstepRecorder, checkpoint, config_file=None, delay_s: float = 0.0,
                 after_s: tuple[float, float] = (2.0, 20.0)):
        from dp_ros.graph import read_checkpoint_config
        from dp_ros.sim.lockstep import LockstepEvaluator

        lo, hi = (float(v) for v in after_s)
        if not (0.0 <= lo <= hi and np.isfinite(hi)):
            raise ValueError(f"takeover time range must be 0 <= min <= max, got {lo}:{hi}")
        task = read_checkpoint_config(checkpoint).get("extra", {}).get("task")
        if task is not None and task != recorder.task:     # (a checkpoint of no recorded task is let run)
            raise ValueError(f"the checkpoint {checkpoint} was trained on {task!r}, the recording is of {recorder.task!r}")
        self.checkpoint, self.delay_s, self.after_s = str(checkpoint), float(delay_s), (lo, hi)
        self.evaluator = LockstepEvaluator(checkpoint, config_file, delay_s=delay_s,
                                           seed=int(recorder.params["sim_world_node"]["seed"]), world=recorder.world)

    def __call__(self, index: int) -> dict:
        seed = self.evaluator.seed_of(index)
        after = float(np.random.default_rng(seed).uniform(*self.after_s))
        result = self.evaluator.run_episode(index, stop_after_s=after)
        return {"checkpoint": self.checkpoint, "delay_s": self.delay_s, "stitch": self.evaluator.stitch,
                "policy_s": result["duration_s"], "policy_success": result["success"],
                "coverage_at_takeover": result["final_coverage"]}
