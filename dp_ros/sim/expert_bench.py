"""Measure a scripted expert in closed loop against SimWorld, without ROS.

    python -m dp_ros.sim.expert_bench --task pusht --episodes 50 --seed 0 [--time-limit 60]

Each control step does what teleop_node + the sim world do: the expert reads the task state, the
TCP pose and the teleop target and returns a SpaceMouse event; the event moves the target the
teleop way (dp_ros.core.teleop.TeleopMapper when importable, else the same law inlined: per-axis
deadzone rescaled outside it, += translation * max_speed * dt, clipped to the workspace, z and
rotation locked); the simulated UR5 servos to the target with its lag while SimWorld.step(dt)
runs the physics. Episode k uses task seed seed + k (the block's start pose comes from it) and
expert seed 1000003 * seed + k. Workspace, task plane, home pose, rate, speed and deadzone default
to the deploy config's values. --obs-delay-steps K hands the expert what the world was K control
steps earlier (experts.DelayedObservations: task state and TCP pose; its own target stays
current): how much a strategy loses to old observations, the question a policy's inference
latency asks. Prints one JSON object.
"""

import argparse
import json
import sys
import time

import numpy as np

from .experts import expert_options, make_expert
from .world import SimWorld, TaskPlaneMapping

# config/deploy.yaml's values, used when the config cannot be read.
FALLBACK = {"task_xy_min": [0.35, -0.20], "task_xy_max": [0.75, 0.20],
            "home_pose": [0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0],
            "workspace_min": [0.36, -0.19, 0.02], "workspace_max": [0.74, 0.19, 0.40], "rate_hz": 10.0,
            "max_speed_m_s": 0.25, "deadzone": 0.05, "episode_timeout_s": 30.0, "expert_finish_coverage": 0.0}


def _config_defaults(path=None):
    out = dict(FALLBACK)
    try:
        from dp_ros.graph import default_config, load_params

        cfg = load_params(path or default_config())
        world, servo, tele = cfg["sim_world_node"], cfg["ur5_servo_node"], cfg["teleop_node"]
        for k in ("task_xy_min", "task_xy_max", "home_pose", "episode_timeout_s"):
            out[k] = world.get(k, out[k])
        for k in ("workspace_min", "workspace_max"):
            out[k] = servo.get(k, out[k])
        for k in ("rate_hz", "max_speed_m_s", "deadzone", "expert_finish_coverage"):
            out[k] = tele.get(k, out[k])
    except Exception as exc:  # noqa: BLE001 - the bench must run from a bare checkout too
        if path is not None:
            raise
        print(f"expert_bench: using built-in defaults ({exc})", file=sys.stderr)
    return out


class _InlineTeleop:
    """TeleopMapper's planar law, for when dp_ros.core.teleop is unavailable."""

    def __init__(self, lo, hi, max_speed, deadzone):
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.max_speed, self.deadzone = float(max_speed), float(deadzone)
        self.target = None

    def reset(self, pose):
        self.target = np.asarray(pose, float).copy()
        self.target[:3] = np.clip(self.target[:3], self.lo, self.hi)

    def step(self, translation, rotation, buttons, dt):
        v = np.clip(np.asarray(translation, float), -1, 1)
        v = np.sign(v) * np.maximum(0.0, (np.abs(v) - self.deadzone) / (1.0 - self.deadzone))
        v[2] = 0.0
        self.target[:3] = np.clip(self.target[:3] + v * self.max_speed * dt, self.lo, self.hi)
        return self


def _make_teleop(lo, hi, max_speed, deadzone):
    try:
        from dp_ros.core.teleop import TeleopMapper

        return TeleopMapper(lo, hi, max_speed, 0.6, deadzone, True), "TeleopMapper"
    except ImportError:
        return _InlineTeleop(lo, hi, max_speed, deadzone), "inline"


def run_episode(world, expert, teleop, task_seed, expert_seed, dt, time_limit_s, record=False):
    """One closed-loop episode; returns a result dict (and the target/pusher trajectory if record)."""
    world.reset(task_seed)
    expert.reset(expert_seed)
    teleop.reset(world.tcp_pose())
    n_steps = int(round(time_limit_s / dt))
    compute_ms, actions, traj = [], [], []
    succeeded = False
    for _ in range(n_steps):
        state = world.task_state()
        t0 = time.perf_counter()
        ev = expert.act(state, world.tcp_pose(), teleop.target[:2].copy())
        compute_ms.append(1e3 * (time.perf_counter() - t0))
        actions.append(np.asarray(ev.translation, float))
        teleop.step(ev.translation, ev.rotation, ev.buttons, dt)
        world.servo(teleop.target)
        world.step(dt)
        if record:
            traj.append(np.concatenate([teleop.target[:2], world.task.agent_xy]))
        succeeded = succeeded or bool(world.task.success)
        # done at success, or past it once the expert reached its finish coverage
        if succeeded and (expert.done or not getattr(expert, "finish_coverage", 0.0)):
            break
    acts = np.array(actions)
    res = {"task_seed": int(task_seed), "success": succeeded, "time_s": float(world.time_s),
           "final_coverage": float(world.task.coverage), "max_coverage": float(world.max_coverage),
           "steps": len(actions), "compute_ms": compute_ms,
           "actions_in_range": bool(np.all(np.isfinite(acts)) and np.all(np.abs(acts) <= 1.0))}
    if record:
        res["trajectory"] = np.array(traj)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dp_ros.sim.expert_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=("reach", "pusht"), default="pusht")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=60.0, help="episode time limit, sim seconds")
    ap.add_argument("--config", default=None, help="deploy config (default: the package's)")
    ap.add_argument("--dt", type=float, default=None, help="control step, s (default: 1 / teleop rate_hz)")
    ap.add_argument("--max-speed", type=float, default=None, help="teleop max speed, m/s")
    ap.add_argument("--deadzone", type=float, default=None)
    ap.add_argument("--finish-coverage", type=float, default=None,
                    help="pusht: keep refining past success up to this coverage (0 = stop at success; "
                         "default: teleop_node.expert_finish_coverage)")
    ap.add_argument("--obs-delay-steps", type=int, default=0,
                    help="the expert sees the world as it was this many control steps earlier")
    ap.add_argument("--per-episode", action="store_true", help="also list each episode's result")
    args = ap.parse_args(argv)
    if args.obs_delay_steps < 0:
        ap.error(f"--obs-delay-steps must be >= 0, got {args.obs_delay_steps}")

    cfg = _config_defaults(args.config)
    dt = args.dt if args.dt is not None else 1.0 / float(cfg["rate_hz"])
    max_speed = args.max_speed if args.max_speed is not None else float(cfg["max_speed_m_s"])
    deadzone = args.deadzone if args.deadzone is not None else float(cfg["deadzone"])
    mapping = TaskPlaneMapping(cfg["task_xy_min"], cfg["task_xy_max"])
    world = SimWorld(args.task, mapping, camera_names=(), seed=args.seed, home_pose=cfg["home_pose"])
    teleop, teleop_kind = _make_teleop(cfg["workspace_min"], cfg["workspace_max"], max_speed, deadzone)
    finish = args.finish_coverage if args.finish_coverage is not None else float(cfg["expert_finish_coverage"])
    options = expert_options({"task": args.task, "expert_finish_coverage": finish})
    options["obs_delay_steps"] = args.obs_delay_steps
    expert = make_expert(args.task, mapping, max_speed, dt, args.seed, deadzone=deadzone, **options)

    t_wall = time.perf_counter()
    results = []
    for k in range(args.episodes):
        results.append(run_episode(world, expert, teleop, args.seed + k, 1000003 * args.seed + k, dt,
                                   args.time_limit))
    wall = time.perf_counter() - t_wall

    ms = np.concatenate([r["compute_ms"] for r in results])
    times = np.array([r["time_s"] for r in results])
    ok = np.array([r["success"] for r in results])
    out = {
        "task": args.task, "episodes": args.episodes, "seed": args.seed, "time_limit_s": args.time_limit,
        "obs_delay_steps": args.obs_delay_steps,
        "dt_s": dt, "max_speed_m_s": max_speed, "deadzone": deadzone, "teleop": teleop_kind,
        "success_rate": float(ok.mean()),
        "mean_final_coverage": float(np.mean([r["final_coverage"] for r in results])),
        "mean_episode_time_s": float(times.mean()), "max_episode_time_s": float(times.max()),
        "mean_success_time_s": float(times[ok].mean()) if ok.any() else None,
        "max_success_time_s": float(times[ok].max()) if ok.any() else None,
        "compute_ms_per_step": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                                "p95": float(np.percentile(ms, 95)), "max": float(ms.max())},
        "actions_in_range": all(r["actions_in_range"] for r in results),
        "failed_seeds": [r["task_seed"] for r in results if not r["success"]],
        "wall_s": wall,
    }
    if args.per_episode:
        out["per_episode"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                               if k != "compute_ms"} for r in results]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
