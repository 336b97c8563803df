"""`dp-ros deploy`: the deploy graph without launch_ros (ROS 2 from pip wheels).

Starts the same nodes with the same parameters as launch/deploy.launch.py (both read
dp_ros.graph), one process each. In simulation it runs N episodes - reset the world, enable the
servo and the scheduler, wait for success or the episode timeout - and prints a summary (also
written as JSON) and writes one MP4 per episode plus a contact sheet in <log dir>/videos. On
hardware nothing moves until the operator says so: once the graph is ready it prints what is about
to happen and waits for Enter (on a terminal; --enable skips the question; without a terminal the
operator calls /scheduler/enable), then enables the servo, moves the arm slowly to the configured
start pose when `ur5_servo_node.move_to_start` is set, enables the scheduler and runs until Ctrl-C.
Nodes stop cleanly either way.
"""

import argparse
import json
import math
import re
import select
import sys
import time
from pathlib import Path

from dp_ros import topics
from dp_ros.core.servo_controller import ServoController
from dp_ros.graph import (default_checkpoint, default_config, deploy_graph, load_params, node_params,
                          read_checkpoint_config)
from dp_ros.runtime.episodes import rollout_summary, run_episode
from dp_ros.runtime.monitor import GraphMonitor, NodeDied, check_alive, wait_until
from dp_ros.runtime.processes import NodeProcesses, stop_on_signals
from dp_ros.viz.progress import add_progress_flag, echo, progress_bar


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros deploy", description=__doc__.split("\n")[0])
    ap.add_argument("--hardware", action="store_true", help="real UR5 + RealSense backends (default: sim)")
    ap.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped model)")
    ap.add_argument("--config", default=None, help="ROS 2 parameter file (default: config/deploy.yaml)")
    ap.add_argument("--episodes", type=int, default=3, help="sim episodes to run")
    ap.add_argument("--stitch", default=None, help="how chunks join: none, blend[:B], ensemble, "
                                                   "inpaint[:K[:W[:B[:G[:N[:M]]]]]] "
                                                   "or auto (default: the config's action_scheduler_node.stitch; "
                                                   "auto: the checkpoint's recommendation, else inpaint; fields as "
                                                   "in `dp-ros bench stitching`, left out: the config's)")
    ap.add_argument("--action-horizon", type=int, default=None,
                    help="Ta, waypoints executed per chunk (default: the config's action_scheduler_node."
                         "action_horizon; 0 = the checkpoint's)")
    ap.add_argument("--log-dir", default=None, help="node logs and summary (default: runs/deploy-<time>)")
    ap.add_argument("--summary-json", default=None, help="where to write the summary (default: in log dir)")
    ap.add_argument("--seed", type=int, default=None, help="sim: episode k uses seed + k + 1 (default: config)")
    ap.add_argument("--episode-timeout", type=float, default=None, help="sim episode limit in s (default: config)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for the policy")
    ap.add_argument("--no-video", action="store_true", help="sim: no per-episode MP4s / contact sheet")
    ap.add_argument("--enable", action="store_true",
                    help="hardware: start moving as soon as the graph is ready, without asking (someone at the e-stop)")
    add_progress_flag(ap)
    return ap


def rollout_videos(specs, config, cameras, out_dir):
    """The run's video writer: the overlay uses the sim world's parameters as the graph runs it
    (task plane box, top camera size, camera rate). None when PyAV is missing (said on stderr)."""
    try:
        import av  # noqa: F401 - checked here so a missing encoder costs no episode
    except ImportError:
        print("[dp-ros deploy] WARNING: PyAV (av) is not installed: no videos "
              "(pip install -r requirements.txt, or pass --no-video)", file=sys.stderr, flush=True)
        return None
    from dp_ros.viz.rollout import PixelFrame, RolloutVideos
    world = next(s for s in specs if s.name == "sim_world_node")
    p = {**load_params(config)["sim_world_node"], **world.overrides}
    pixels = PixelFrame(p["task_xy_min"], p["task_xy_max"], (p["image_height"], p["image_width"])) \
        if "top" in cameras else None
    return RolloutVideos(out_dir, pixels, p["camera_fps"])


def main(argv=None) -> int:
    return run(parser().parse_args(argv))


def run(args: argparse.Namespace, extra: dict | None = None) -> int:
    """The deploy session for parsed `dp-ros deploy` arguments (`dp-ros eval` calls it too, with
    `extra` results for the summary JSON, e.g. its lockstep figures)."""
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not args.checkpoint and not (checkpoint / "config.json").is_file():
        # No trained model shipped yet: run the graph anyway, with random weights, and say so.
        from dp_ros.policy.untrained import make_untrained_checkpoint
        checkpoint = Path("runs/untrained_checkpoint")
        if not (checkpoint / "config.json").is_file():
            make_untrained_checkpoint(checkpoint)
        print(f"[dp-ros deploy] NOTE: no trained model in {default_checkpoint()}; using an UNTRAINED "
              f"checkpoint ({checkpoint}). Expect the arm to move without solving the task.", flush=True)
    config = Path(args.config) if args.config else default_config()
    try:
        specs = deploy_graph(sim=not args.hardware, checkpoint=checkpoint, config_file=config, seed=args.seed,
                             stitch=args.stitch, action_horizon=args.action_horizon)
        # the servo's own checks (a start pose outside the envelope), before any process starts
        ServoController.from_params(node_params(specs, config)["ur5_servo_node"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"[dp-ros deploy] ERROR: {exc}", file=sys.stderr)
        return 2
    if args.episode_timeout and not args.hardware:
        next(s for s in specs if s.name == "sim_world_node").overrides["episode_timeout_s"] = args.episode_timeout
    ckpt = read_checkpoint_config(checkpoint)
    note = ckpt.get("extra", {}).get("note")
    if note:
        print(f"[dp-ros deploy] model note: {note}", flush=True)
    log_dir = Path(args.log_dir or f"runs/deploy-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"[dp-ros deploy] {'hardware' if args.hardware else 'simulation'}: "
          f"{', '.join(s.name for s in specs)}; logs in {log_dir}", flush=True)

    stop_on_signals()
    procs = NodeProcesses(specs, config, log_dir)
    monitor = None
    summary = {"checkpoint": str(checkpoint), "mode": "hardware" if args.hardware else "sim", "episodes": []}
    cameras = list(ckpt.get("policy_config", {}).get("cameras", {}))
    videos = None if args.hardware or args.no_video or not cameras else \
        rollout_videos(specs, config, cameras, log_dir / "videos")
    bar = None
    code = 0
    try:
        procs.start()
        monitor = GraphMonitor(cameras=cameras if videos else ())
        wait_until(lambda: "policy_node" in monitor.diagnostics, args.ready_timeout, procs, "the policy to be ready")
        print("[dp-ros deploy] policy ready", flush=True)
        if args.hardware:
            print(hardware_plan(specs, config, checkpoint, ckpt), flush=True)
            alive = lambda: check_alive(procs)  # noqa: E731
            if wait_for_operator(args.enable, sys.stdin, alive):
                servo = servo_params(specs, config)
                enable_on_hardware(monitor, sys.stdin if not args.enable else None, alive,
                                   start_move=servo if servo["move_to_start"] else None)
            while True:
                check_alive(procs)
                time.sleep(0.2)
        bar = progress_bar(total=args.episodes, enabled=not args.no_progress, desc="episodes", unit="ep")
        for i in range(args.episodes):
            ep = run_episode(monitor, procs, i)
            summary["episodes"].append(ep)
            if videos is not None:
                ep["video"] = write_video(videos, monitor.trace.collect(), ep)
            echo(f"[dp-ros deploy] episode {i}: success={ep['success']} coverage={ep['final_coverage']:.2f} "
                 f"t={ep['duration_s']:.1f}s latency={ep['inference_latency_ms']} "
                 f"dropped={ep['dropped_waypoints']}")
            bar.update(1)
            bar.set_postfix(success=f"{sum(e['success'] for e in summary['episodes'])}/{i + 1}")
    except KeyboardInterrupt:
        print("[dp-ros deploy] interrupted: stopping nodes", flush=True)
    except (NodeDied, TimeoutError, RuntimeError) as exc:
        print(f"[dp-ros deploy] ERROR: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if bar is not None:
            bar.close()
        if monitor is not None:
            try:
                monitor.call("scheduler", False, timeout_s=1.0)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        procs.stop()
    # The results are out before the runner's own node is taken down: nothing is lost to its teardown.
    try:
        write_summary(summary, args, ckpt, log_dir, monitor, videos, extra)
    finally:
        if monitor is not None:
            monitor.close()
    return code


def write_summary(summary, args, ckpt, log_dir, monitor, videos, extra):
    eps = summary["episodes"]
    if eps:
        summary.update(task=ckpt.get("extra", {}).get("task"), **rollout_summary(eps, monitor.latencies_s))
    summary.update(extra or {})
    sheet = videos.finish() if videos is not None else None
    if sheet:
        summary["videos"] = {"dir": str(videos.out_dir), "contact_sheet": sheet["path"]}
    out = Path(args.summary_json or log_dir / "summary.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    brief = {k: ({kk: vv for kk, vv in v.items() if kk != "episodes"} if isinstance(v, dict) else v)
             for k, v in summary.items() if k not in ("episodes", "videos")}
    print(json.dumps(brief, indent=2))
    if sheet:
        print(f"[dp-ros deploy] videos in {videos.out_dir} (contact sheet {sheet['path']})")
    print(f"[dp-ros deploy] summary written to {out}", flush=True)


def servo_params(specs, config) -> dict:
    """The servo's values as its process gets them: the config file's section, then the graph's."""
    spec = next(s for s in specs if s.name == "ur5_servo_node")
    return {**load_params(config)["ur5_servo_node"], **spec.overrides}


def hardware_plan(specs, config, checkpoint, ckpt) -> str:
    """What enabling will do, in the operator's terms: which robot, which policy, inside which box,
    how fast, and for a planar policy the height and orientation it will hold the tool at."""
    from dp_ros.core.robot_features import robot_spec
    servo = servo_params(specs, config)
    pcfg = ckpt.get("policy_config", {})
    lines = ["[dp-ros deploy] READY on hardware; nothing moves yet. When enabled:"]
    if servo.get("move_to_start"):
        pose = servo["start_pose"]
        lines.append(f"  first the TCP moves at {servo['start_move_speed']:g} m/s to the start pose x {pose[0]:g} "
                     f"y {pose[1]:g} z {pose[2]:g} m, (qx qy qz qw) {[round(v, 3) for v in pose[3:]]}, and stops;")
    lines += [f"  the policy {checkpoint} (task {ckpt.get('extra', {}).get('task', '?')}) streams targets to the "
              f"UR5 at {servo['robot_host']}, {servo['rate_hz']:g} Hz servoL;",
              f"  the TCP stays inside x {servo['workspace_min'][0]:g}..{servo['workspace_max'][0]:g}, "
              f"y {servo['workspace_min'][1]:g}..{servo['workspace_max'][1]:g}, "
              f"z {servo['workspace_min'][2]:g}..{servo['workspace_max'][2]:g} m (base frame), at most "
              f"{servo['max_lin_speed']:g} m/s and {servo['max_ang_speed']:g} rad/s;"]
    try:
        robot = robot_spec(ckpt.get("extra"), pcfg.get("lowdim_obs", {}), int(pcfg["action_dim"]))
        if robot["action_space"] != "xyz_rotvec":
            fixed = robot["fixed_pose"]
            held = "height z {:.3f} m and orientation".format(fixed[2]) if robot["action_space"] == "xy"                 else "orientation"
            lines.append(f"  the policy commands {robot['action_space']}; the tool is held at {held} "
                         f"(qx qy qz qw) {[round(v, 3) for v in fixed[3:]]} from the checkpoint's fixed pose;")
    except (KeyError, ValueError) as exc:
        lines.append(f"  (the checkpoint's action space could not be read: {exc})")
    lines.append("  keep a hand on the emergency stop; Ctrl-C holds the arm and stops the nodes.")
    return "\n".join(lines)


def enable_on_hardware(monitor, stdin, alive, start_move: dict | None = None) -> None:
    """Enable the servo, then (start_move: the servo's parameters, when it has a start pose) move
    to the start pose, then enable the scheduler. A servo that refuses (a fault latched since
    start-up, an e-stop) is reset only on the operator's say-so: on a terminal, Enter resets it
    (re-uploads the control script, re-syncs to the measured pose) and tries again; otherwise
    RuntimeError. A move to start that is refused or stopped is a RuntimeError: nothing streams."""
    from std_srvs.srv import Trigger

    from dp_ros.runtime.monitor import call_service
    reset = monitor.node.create_client(Trigger, topics.SERVO_RESET)
    for name in ("servo", "scheduler"):
        if name == "scheduler" and start_move:
            move_to_start(monitor, start_move, alive)
        while not (answer := monitor.call(name, True)).success:
            if stdin is None or not stdin.isatty():
                raise RuntimeError(f"the {name} refused to enable: {answer.message}")
            print(f"[dp-ros deploy] the {name} refused to enable: {answer.message}", flush=True)
            wait_for_operator(False, stdin, alive, prompt="clear the cause (pendant), then press Enter to reset the "
                              "servo (re-uploads the control script) and enable again (Ctrl-C to stop)")
            # a reset reconnects and uploads the control script: seconds, not a service round trip
            done = call_service(reset, Trigger.Request(), timeout_s=30.0)
            print(f"[dp-ros deploy] servo reset: {done.message or 'ok'}", flush=True)
        print(f"[dp-ros deploy] {name}: {answer.message}", flush=True)
    print("[dp-ros deploy] ENABLED: the arm follows the policy; Ctrl-C stops", flush=True)


def move_to_start(monitor, servo: dict, alive, poll_s: float = 0.1) -> str:
    """Ask the servo for its move to the start pose and wait until it has ended, by /servo/state:
    its `start_moves` count reaches the move's number (the answer ends "(move N)") and `start_move`
    is no longer "moving".
    Returns the servo's answer; RuntimeError when it refuses, the move is stopped (e-stop, fault,
    disable) or takes far longer than crossing the whole workspace box at start_move_speed."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import Trigger

    from dp_ros.nodes.common import STATE_QOS
    from dp_ros.runtime.monitor import call_service
    state = {"moves": 0, "move": "", "message": ""}

    def on_state(msg):
        values = {kv.key: kv.value for kv in msg.status[0].values}
        if "start_moves" in values and int(values["start_moves"]) >= state["moves"]:
            state.update(moves=int(values["start_moves"]), move=values["start_move"], message=msg.status[0].message)

    # the state topic keeps its last messages (transient local): a move that ended before this
    # subscription matched is still seen
    sub = monitor.node.create_subscription(DiagnosticArray, topics.SERVO_STATE, on_state, STATE_QOS)
    client = monitor.node.create_client(Trigger, topics.SERVO_MOVE_TO_START)
    try:
        answer = call_service(client, Trigger.Request())
        if not answer.success:
            raise RuntimeError(f"the servo refused the move to the start pose: {answer.message}")
        print(f"[dp-ros deploy] {answer.message}", flush=True)
        number = int(re.search(r"\(move (\d+)\)$", answer.message).group(1))
        diagonal = math.dist(servo["workspace_min"], servo["workspace_max"])
        deadline = time.monotonic() + 2.0 * diagonal / servo["start_move_speed"] + 10.0
        while state["moves"] < number or (state["moves"] == number and state["move"] == "moving"):
            alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the move to the start pose did not end in time (servo: "
                                   f"{state['message'] or 'no state'})")
            time.sleep(poll_s)
        if state["moves"] > number:
            raise RuntimeError("another move to the start pose was asked for meanwhile")
        if state["move"] != "done":
            raise RuntimeError(f"the move to the start pose {state['move']} (servo: {state['message']})")
        print("[dp-ros deploy] at the start pose", flush=True)
        return answer.message
    finally:
        monitor.node.destroy_subscription(sub)
        monitor.node.destroy_client(client)


def wait_for_operator(enable: bool, stdin, alive, poll_s: float = 0.2,
                      prompt: str = "press Enter to enable (Ctrl-C to stop)") -> bool:
    """The operator's go-ahead: True at once with --enable, True after Enter on a terminal; False
    without a terminal (the operator enables through the service instead). `alive()` raises when a
    node died, so waiting never hides a dead graph."""
    if enable:
        return True
    if stdin is None or not stdin.isatty():
        calls = "".join(f"  ros2 service call {srv} std_srvs/srv/SetBool '{{data: true}}'\n"
                        for srv in (topics.SERVO_ENABLE, topics.SCHEDULER_ENABLE))
        print(f"[dp-ros deploy] no terminal to ask on: enable with\n{calls}or start with --enable", flush=True)
        return False
    print(f"[dp-ros deploy] {prompt}", flush=True)
    while True:
        alive()
        if select.select([stdin], [], [], poll_s)[0]:
            stdin.readline()
            return True


def write_video(videos, data, ep) -> dict | None:
    """One episode's MP4; a failure costs the video, never the evaluation."""
    try:
        return videos.add(data, ep)
    except Exception as exc:  # noqa: BLE001 - any encoder/file error means the same here
        print(f"[dp-ros deploy] WARNING: episode {ep['episode']}: no video ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
        return None


if __name__ == "__main__":
    sys.exit(main())
