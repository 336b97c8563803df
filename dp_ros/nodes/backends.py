"""The device behind each hardware node, chosen by its `backend` parameter: the real one or the
sim world's. One place that maps the names (validated by core/parameters.py) to classes; the
device library is imported only for the chosen one, so simulation needs neither pyrealsense2
nor ur_rtde.

Parameters read with p.get(name, default) are optional: a config without them keeps the
behaviour of before (pendant TCP and payload, auto exposure, ...)."""


def _optional_list(value):
    """[] or None in the config = not set."""
    return list(value) if value else None


def _optional_float(value, unset_below=0.0):
    """A negative number in the config = not set."""
    return None if value is None or float(value) < unset_below else float(value)


def camera(node, p: dict, index: int, name: str):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimCamera
        return SimCamera(node, name)
    from dp_ros.hardware.realsense import RealSenseCamera, color_options
    serials = list(p["serials"]) + [""] * len(p["camera_names"])
    return RealSenseCamera(serial=serials[index] or None, width=p["width"], height=p["height"], fps=p["fps"],
                           color_options=color_options(p.get("exposure_us", 0.0), p.get("white_balance_k", 0.0)))


def robot_receive(node, p: dict):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimRobotReceive
        return SimRobotReceive(node)
    from dp_ros.hardware.ur_rtde_backend import TOOL_DOWN, RTDEReceive
    return RTDEReceive(p["robot_host"], frequency_hz=p["rate_hz"],
                       quat_reference=p.get("quaternion_reference", None) or TOOL_DOWN,
                       state_timeout_s=p.get("state_timeout_s", 0.1))


def robot_control(node, p: dict):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimRobotControl
        return SimRobotControl(node)
    from dp_ros.hardware.ur_rtde_backend import RTDEServo
    backend = RTDEServo(p["robot_host"], frequency_hz=p["rate_hz"], lookahead_time=p["lookahead_time"],
                        gain=p["gain"], rt_priority=p["realtime_priority"],
                        tcp_offset=_optional_list(p.get("tcp_offset")),
                        payload_kg=_optional_float(p.get("payload_kg", -1.0)),
                        payload_cog=_optional_list(p.get("payload_cog")),
                        watchdog_hz=p.get("watchdog_hz", 10.0))
    message = f"UR at {p['robot_host']}: {backend.describe_setup()}"
    if "tcp_offset" in backend.setup:   # one call site per severity (rclpy)
        node.get_logger().info(message)
    else:
        node.get_logger().warn(message)
    return backend


def spacemouse(node, p: dict):
    """The SpaceMouse behind teleop_node (backend spacenav)."""
    from dp_ros.hardware.spacemouse import SpaceNavDevice
    return SpaceNavDevice(full_scale=p.get("full_scale", 350.0), yaw_offset_deg=p.get("yaw_offset_deg", 0.0),
                          quiet_zero_s=p.get("quiet_zero_s", 0.25))   # the deadzone is the teleop mapping's
