"""The device behind each hardware node, chosen by its `backend` parameter: the real one or the
sim world's. One place that maps the names (validated by core/parameters.py) to classes; the
device library is imported only for the chosen one, so simulation needs neither pyrealsense2
nor ur_rtde."""


def camera(node, p: dict, index: int, name: str):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimCamera
        return SimCamera(node, name)
    from dp_ros.hardware.realsense import RealSenseCamera
    serials = list(p["serials"]) + [""] * len(p["camera_names"])
    return RealSenseCamera(serial=serials[index] or None, width=p["width"], height=p["height"], fps=p["fps"])


def robot_receive(node, p: dict):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimRobotReceive
        return SimRobotReceive(node)
    from dp_ros.hardware.ur_rtde_backend import RTDEReceive
    return RTDEReceive(p["robot_host"], frequency_hz=p["rate_hz"])


def robot_control(node, p: dict):
    if p["backend"] == "sim":
        from dp_ros.nodes.sim_backends import SimRobotControl
        return SimRobotControl(node)
    from dp_ros.hardware.ur_rtde_backend import RTDEServo
    return RTDEServo(p["robot_host"], frequency_hz=p["rate_hz"], lookahead_time=p["lookahead_time"],
                     gain=p["gain"], rt_priority=p["realtime_priority"])
