"""The deploy and teleop graphs, described once.

launch/deploy.launch.py (full ROS 2 install) and `dp-ros deploy` (pip-only runner) both build
their processes from `deploy_graph()`, so the two cannot drift apart. ROS-free: it only reads
YAML and the checkpoint's config.json.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dp_ros.core import parameters
from dp_ros.core.scheduler import STITCH_AUTO, STITCH_SETTINGS, parse_stitch, resolve_stitch

PACKAGE = "dp_ros"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class NodeSpec:
    executable: str               # console script / `ros2 run dp_ros <executable>`
    name: str                     # node name = the params-file key
    overrides: dict = field(default_factory=dict)   # parameters on top of the config file


def share_dir() -> Path:
    """config/, launch/ and models/: from the source tree when run from it, else the ament share."""
    if (REPO_ROOT / "config" / "deploy.yaml").is_file():
        return REPO_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - fall back to the source layout for a clear file error later
        return REPO_ROOT


def default_config() -> Path:
    return share_dir() / "config" / "deploy.yaml"


def default_checkpoint() -> Path:
    return share_dir() / "models" / "reach_image_policy"


def load_params(config_file) -> dict:
    """{node_name: {param: value}} from a ROS 2 parameter file, with a clear error when malformed."""
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    out = {}
    for node, section in data.items():
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ValueError(f"{path}: section {node!r} has no 'ros__parameters' mapping")
        out[node.strip("/")] = dict(section["ros__parameters"] or {})
    return out


def read_checkpoint_config(checkpoint) -> dict:
    """The policy's config.json (horizons, cameras, control rate) without importing torch."""
    path = Path(checkpoint) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint has no config.json: {Path(checkpoint)}")
    return json.loads(path.read_text())


def recommended_stitch(ckpt_cfg: dict) -> str | None:
    """The stitch mode a checkpoint was shipped with (`dp-ros export --stitch`), if any."""
    return (ckpt_cfg.get("extra", {}).get("deploy") or {}).get("stitch")


def recommended_stitch_settings(ckpt_cfg: dict) -> dict:
    """{node: {parameter: value}}: the stitch settings a checkpoint was shipped with beside its mode
    (`dp-ros export --stitch inpaint:0:0:0`), which run where its mode runs through `auto`."""
    deploy = ckpt_cfg.get("extra", {}).get("deploy") or {}
    out = {}
    for key, (node, kind) in STITCH_SETTINGS.items():
        if key in deploy:
            out.setdefault(node, {})[key] = kind(deploy[key])
    return out


def executed_steps(ckpt_cfg: dict, configured: int = 0) -> int:
    """Ta, the waypoints of each chunk the scheduler executes: `configured` when > 0 (the config's
    action_horizon or a command line's), else the one the checkpoint was exported with (`dp-ros
    export --action-horizon`), else the Ta it was trained with. At most Tp - To + 1: chunk index
    To-1 is the observation's instant, and the last executed one must be in the chunk."""
    spec = parameters.NODE_PARAMETERS["action_scheduler_node"]["action_horizon"]
    configured = spec.check("action_scheduler_node.action_horizon", configured)
    policy_cfg = ckpt_cfg["policy_config"]
    deploy = ckpt_cfg.get("extra", {}).get("deploy") or {}
    ta = configured or int(deploy.get("action_horizon") or 0) or int(policy_cfg["action_horizon"])
    most = int(policy_cfg["pred_horizon"]) - int(policy_cfg["obs_horizon"]) + 1
    if not 1 <= ta <= most:
        raise ValueError(f"action_horizon {ta} is outside [1, {most}]: this checkpoint predicts "
                         f"Tp={policy_cfg['pred_horizon']} steps from To={policy_cfg['obs_horizon']} observations")
    return ta


def deploy_graph(sim: bool, checkpoint, config_file=None, seed=None, stitch=None,
                 action_horizon: int | None = None) -> list[NodeSpec]:
    """Nodes of the deploy graph. In simulation the three hardware nodes use their sim backends
    and the sim world node plays the robot and cameras. On hardware the scheduler never starts
    streaming by itself: the operator enables it (/scheduler/enable; `dp-ros deploy` asks).
    stitch: how chunks join, instead of the config's: a mode, or a mode with settings as
    `dp-ros bench stitching` takes them (`inpaint:4:0:0:20`; fields left out: the config's). The
    config's `auto` becomes the mode the checkpoint recommends, else the default (so the scheduler
    node always gets a concrete mode). action_horizon: waypoints executed per chunk, instead of the
    config's (executed_steps)."""
    config_file = Path(config_file or default_config())
    ckpt_cfg = read_checkpoint_config(checkpoint)
    config = load_params(config_file)
    policy_cfg = ckpt_cfg["policy_config"]
    cameras = list(policy_cfg.get("cameras", {}).keys())
    dt_s = 1.0 / float(policy_cfg["control_frequency_hz"])
    named = parse_stitch(stitch) if stitch and stitch != STITCH_AUTO else {}
    configured = named.get("stitch") or stitch or config["action_scheduler_node"]["stitch"]
    recommended = recommended_stitch(ckpt_cfg)
    mode = resolve_stitch(configured, recommended)
    # `auto` runs the checkpoint's mode with the settings it was shipped with; a mode named in the
    # config or on the command line runs with the config's, but for the settings named with it
    shipped = recommended_stitch_settings(ckpt_cfg) if configured == STITCH_AUTO and mode == recommended else {}
    for key, value in named.items():
        if key in STITCH_SETTINGS:
            shipped.setdefault(STITCH_SETTINGS[key][0], {})[key] = value

    configured_ta = config["action_scheduler_node"].get("action_horizon", 0) if action_horizon is None else action_horizon
    try:
        ta = executed_steps(ckpt_cfg, configured_ta)
    except ValueError as exc:
        where = "--action-horizon" if action_horizon is not None else str(config_file)
        raise ValueError(f"{where}: {exc}") from None

    backend = {"backend": "sim"} if sim else {}
    nodes = [
        NodeSpec("camera_node", "camera_node", {**backend, **({"camera_names": cameras} if cameras else {})}),
        NodeSpec("robot_state_node", "robot_state_node", dict(backend)),
        NodeSpec("policy_node", "policy_node", {"checkpoint": str(Path(checkpoint).resolve()),
                                                **shipped.get("policy_node", {})}),
        NodeSpec("action_scheduler_node", "action_scheduler_node", {
            "action_horizon": ta,
            "obs_horizon": int(policy_cfg["obs_horizon"]),
            "dt_s": dt_s, "stitch": mode,
            **shipped.get("action_scheduler_node", {}),
            **({} if sim else {"autostart": False})}),      # a real arm moves only on the operator's go-ahead
        NodeSpec("ur5_servo_node", "ur5_servo_node", dict(backend)),
    ]
    if sim:
        sim_over = {}
        if cameras:
            h, w = policy_cfg["cameras"][cameras[0]]
            sim_over = {"camera_names": cameras, "image_height": int(h), "image_width": int(w)}
        task = ckpt_cfg.get("extra", {}).get("task")
        if task:
            sim_over["task"] = task
        if seed is not None:
            sim_over["seed"] = int(seed)   # episode k uses seed + k
        nodes.insert(0, NodeSpec("sim_world_node", "sim_world_node", sim_over))
    return check_graph(nodes, config_file)


class _NoAliasDumper(yaml.SafeDumper):
    """rcl's parameter-file parser refuses YAML anchors/aliases: write shared values out in full."""

    def ignore_aliases(self, data):
        return True


def teleop_graph(sim: bool, config_file=None, device=None, task=None, output_dir=None,
                 episode_timeout_s=None, seed=None, cameras=None) -> list[NodeSpec]:
    """Nodes for recording demonstrations: the hardware nodes (or the sim world) plus teleop_node,
    which streams targets to the servo and records episodes. cameras: the camera names to record
    (None: the config's; [] records none, for a state-only dataset)."""
    config_file = Path(config_file or default_config())
    params = load_params(config_file)
    servo, world, cams = params["ur5_servo_node"], params["sim_world_node"], params["camera_node"]
    backend = {"backend": "sim"} if sim else {}
    task = task or world["task"]
    camera_names = list(cams["camera_names"] if cameras is None else cameras)
    teleop = {"sim": sim, "workspace_min": servo["workspace_min"], "workspace_max": servo["workspace_max"],
              "camera_names": camera_names, "task": task,
              "task_xy_min": world["task_xy_min"], "task_xy_max": world["task_xy_max"]}
    # the cell's tool, payload and camera settings from this config file, for the episode metadata
    teleop.update({k: servo[k] for k in ("apply_tcp_offset", "tcp_offset", "payload_kg", "payload_cog")},
                  **{k: cams[k] for k in ("exposure_us", "white_balance_k")})
    if sim:
        from dp_ros.sim.world import TASK_OBJECTS
        teleop["objects"] = ",".join(TASK_OBJECTS[task])      # the sim world's tracked objects
    if device:
        teleop["backend"] = device
    if output_dir:
        teleop["output_dir"] = str(output_dir)
    nodes = [
        NodeSpec("camera_node", "camera_node", {**backend, "camera_names": camera_names}),
        NodeSpec("robot_state_node", "robot_state_node", dict(backend)),
        NodeSpec("ur5_servo_node", "ur5_servo_node", {**backend, "source": "teleop"}),
        NodeSpec("teleop_node", "teleop_node", teleop),
    ]
    if sim:
        world_over = {"task": task, "camera_names": camera_names}
        if episode_timeout_s:
            world_over["episode_timeout_s"] = float(episode_timeout_s)
        if seed is not None:
            world_over["seed"] = int(seed)
        nodes.insert(0, NodeSpec("sim_world_node", "sim_world_node", world_over))
    return check_graph(nodes, config_file)


def check_graph(nodes: list[NodeSpec], config_file) -> list[NodeSpec]:
    """Every node's values (config section + what the graph sets) against its parameter spec, so
    that a wrong config is a clear error before any process starts."""
    params = load_params(config_file)
    for spec in nodes:
        if spec.name not in params:
            raise ValueError(f"{config_file}: no section for node {spec.name!r}")
        try:
            parameters.validate(spec.name, {**parameters.defaults(spec.name, params), **spec.overrides},
                                complete=False)
        except ValueError as exc:
            raise ValueError(f"{config_file}: {exc}") from None
    return nodes


def node_params(node_specs: list[NodeSpec], config_file=None) -> dict:
    """{node name: its complete, checked start-up values} as the graph's processes get them (the
    config file's section and borrowed values, then the graph's overrides): for code that runs a
    node's logic without the node, like the lockstep evaluator."""
    params = load_params(Path(config_file or default_config()))
    return {spec.name: parameters.validate(spec.name, {**parameters.defaults(spec.name, params), **spec.overrides})
            for spec in node_specs}


def write_params_file(path, node_specs: list[NodeSpec]):
    """The overrides as a second ROS 2 parameter file (loaded after the config file)."""
    data = {spec.name: {"ros__parameters": spec.overrides} for spec in node_specs if spec.overrides}
    Path(path).write_text(yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False))
    return path


def ros_env(base=None) -> dict:
    """Environment for child processes with ROS 2 from pip: AMENT_PREFIX_PATH must name the venv."""
    env = dict(os.environ if base is None else base)
    import sys
    prefix = sys.prefix
    if prefix not in env.get("AMENT_PREFIX_PATH", "").split(":"):
        env["AMENT_PREFIX_PATH"] = ":".join(p for p in (prefix, env.get("AMENT_PREFIX_PATH")) if p)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
