"""The device behind each hardware node, chosen by its `backend` parameter: the real one or the
sim world's. One place that maps the names (validated by core/parameters.py) to classes; the
device library is imported only for the chosen one, so simulation needs neither pyrealsense2
nor ur_rtde. Parameters: core/parameters.py."""


def camera(node, p: dict, index: int, name: str):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimCamera
        return SimCamera(node, name)
    from dp_ros.hardware.realsense import RealSenseCamera, color_options
    serials = list(p["serials"]) + [""] * len(p["camera_names"])
    return RealSenseCamera(serial=serials[index] or None, width=p["width"], height=p["height"], fps=p["fps"],
                           color_options=color_options(p["exposure_us"], p["white_balance_k"]))


def robot_receive(node, p: dict):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimRobotReceive
        return SimRobotReceive(node)
    from dp_ros.hardware.ur_rtde_backend import TOOL_DOWN, RTDEReceive
    return RTDEReceive(p["robot_host"], frequency_hz=p["rate_hz"],
                       quat_reference=p["quaternion_reference"] or TOOL_DOWN, state_timeout_s=p["state_timeout_s"])


def robot_control(node, p: dict):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimRobotControl
        return SimRobotControl(node)
    from dp_ros.hardware.ur_rtde_backend import RTDEServo
    backend = RTDEServo(p["robot_host"], frequency_hz=p["rate_hz"], lookahead_time=p["lookahead_time"],
                        gain=p["gain"], rt_priority=p["realtime_priority"],
                        tcp_offset=p["tcp_offset"] if p["apply_tcp_offset"] else None,
                        payload_kg=p["payload_kg"] if p["payload_kg"] >= 0 else None,
                        payload_cog=p["payload_cog"] if p["payload_kg"] >= 0 else None,
                        watchdog_hz=p["watchdog_hz"])
    message = f"UR at {p['robot_host']}: {backend.describe_setup()}"
    if "tcp_offset" in backend.setup:   # one call site per severity (rclpy)
        node.get_logger().info(message)
    else:
        node.get_logger().warning(message)
    return backend


def spacemouse(node, p: dict):
    """The SpaceMouse behind teleop_node (backend spacenav)."""
    from dp_ros.hardware.spacemouse import SpaceNavDevice
    return SpaceNavDevice(full_scale=p["full_scale"], yaw_offset_deg=p["yaw_offset_deg"],
                          quiet_zero_s=p["quiet_zero_s"])   # the deadzone is the teleop mapping's
