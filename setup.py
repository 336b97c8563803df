import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dp_ros"

# Every node and tool is a console script: `ros2 run dp_ros <name>` on a colcon install, and the
# same names on PATH in the pip venv.
NODES = {
    "camera_node": "dp_ros.nodes.camera_node:main",
    "robot_state_node": "dp_ros.nodes.robot_state_node:main",
    "policy_node": "dp_ros.nodes.policy_node:main",
    "action_scheduler_node": "dp_ros.nodes.action_scheduler_node:main",
    "ur5_servo_node": "dp_ros.nodes.ur5_servo_node:main",
    "sim_world_node": "dp_ros.nodes.sim_world_node:main",
    "teleop_node": "dp_ros.nodes.teleop_node:main",
}
TOOLS = {
    "dp-ros": "dp_ros.cli:entry",
    "dp-train": "dp_ros.train.cli:main",
}


def data_dir(folder):
    files = [f for f in glob(f"{folder}/**/*", recursive=True) if os.path.isfile(f)]
    by_dir = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(f), []).append(f)
    return [(os.path.join("share", PACKAGE, d), fs) for d, fs in sorted(by_dir.items())]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *data_dir("launch"),
        *data_dir("config"),
        *data_dir("models"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dp_ros developers",
    maintainer_email="dev@dp-ros.invalid",
    description="Diffusion Policy as a real-time ROS 2 controller for a UR5 arm",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{k} = {v}" for k, v in {**NODES, **TOOLS}.items()],
    },
)
