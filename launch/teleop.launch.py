"""ros2 launch dp_ros teleop.launch.py [sim:=true|false] [device:=spacenav|scripted] [task:=reach|pusht]
                                       [output_dir:=DIR] [config:=FILE]

Teleoperation and demonstration recording on a full ROS 2 install. Same graph as `dp-ros record`
(both come from dp_ros.graph.teleop_graph).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dp_ros.graph import PACKAGE, default_config, teleop_graph


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    sim = arg("sim").lower() in ("true", "1", "yes")
    config = arg("config")
    return [Node(package=PACKAGE, executable=spec.executable, name=spec.name, output="screen",
                 parameters=[config, spec.overrides], emulate_tty=True)
            for spec in teleop_graph(sim, config, device=arg("device") or None, task=arg("task") or None,
                                     output_dir=arg("output_dir") or None)]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim", default_value="false", description="simulated world instead of UR5 + RealSense"),
        DeclareLaunchArgument("device", default_value="spacenav", description="spacenav | scripted (sim only)"),
        DeclareLaunchArgument("task", default_value="", description="sim task (default: config)"),
        DeclareLaunchArgument("output_dir", default_value="data/demos", description="episode bags go here"),
        DeclareLaunchArgument("config", default_value=str(default_config()), description="ROS 2 parameter file"),
        OpaqueFunction(function=_nodes),
    ])
