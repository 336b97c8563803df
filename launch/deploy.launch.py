"""ros2 launch dp_ros deploy.launch.py [sim:=true|false] [checkpoint:=DIR] [config:=FILE]

The deploy graph on a full ROS 2 install. The node list and their parameters come from
dp_ros.graph, which `dp-ros deploy` (the pip-only runner) also uses.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dp_ros.graph import PACKAGE, default_checkpoint, default_config, deploy_graph


def _nodes(context):
    sim = LaunchConfiguration("sim").perform(context).lower() in ("true", "1", "yes")
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    config = LaunchConfiguration("config").perform(context)
    return [Node(package=PACKAGE, executable=spec.executable, name=spec.name, output="screen",
                 parameters=[config, spec.overrides], emulate_tty=True)
            for spec in deploy_graph(sim=sim, checkpoint=checkpoint, config_file=config)]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim", default_value="true", description="simulated world instead of UR5 + RealSense"),
        DeclareLaunchArgument("checkpoint", default_value=str(default_checkpoint()), description="checkpoint directory"),
        DeclareLaunchArgument("config", default_value=str(default_config()), description="ROS 2 parameter file"),
        OpaqueFunction(function=_nodes),
    ])
