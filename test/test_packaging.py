"""The ament_python package is complete: what colcon and `ros2 run/launch` rely on."""

import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from dp_ros.graph import default_config, deploy_graph, load_params, teleop_graph
from dp_ros.policy.untrained import make_untrained_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_ament_python_with_ros_deps():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "dp_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "trajectory_msgs", "std_srvs", "diagnostic_msgs"} <= deps


def test_every_graph_node_is_a_console_script_and_data_files_are_installed(tmp_path):
    setup = (ROOT / "setup.py").read_text()
    scripts = set(re.findall(r'"(\w+)": "dp_ros\.nodes\.\w+:main"', setup))
    ckpt = make_untrained_checkpoint(tmp_path / "ckpt", tiny=True)
    for specs in (deploy_graph(True, ckpt), deploy_graph(False, ckpt), teleop_graph(True), teleop_graph(False)):
        for spec in specs:
            assert spec.executable in scripts
            assert (ROOT / "dp_ros" / "nodes" / f"{spec.executable}.py").is_file()
    for folder in ("launch", "config", "models"):
        assert f'data_dir("{folder}")' in setup
    assert (ROOT / "resource" / "dp_ros").is_file()
    cfg = (ROOT / "setup.cfg").read_text()
    assert "script_dir=$base/lib/dp_ros" in cfg and "install_scripts=$base/lib/dp_ros" in cfg


def test_launch_files_compile():
    # launch_ros is not on PyPI: the files are checked for syntax here and share dp_ros.graph
    # with the pip runner, which the graph tests exercise.
    for f in (ROOT / "launch").glob("*.launch.py"):
        py_compile.compile(str(f), doraise=True)
        assert "dp_ros.graph" in f.read_text()


def test_config_has_a_section_for_every_node():
    params = load_params(default_config())
    for node in ("camera_node", "robot_state_node", "policy_node", "action_scheduler_node",
                 "ur5_servo_node", "sim_world_node", "teleop_node"):
        assert node in params


def test_shipped_models_load_and_stay_under_50mb():
    from dp_ros.policy.checkpoint import load_checkpoint
    total = sum(f.stat().st_size for f in (ROOT / "models").rglob("*") if f.is_file())
    assert total < 50e6, f"models/ holds {total / 1e6:.1f} MB"
    shipped = sorted(p.parent for p in (ROOT / "models").glob("*/config.json"))
    assert shipped, "no shipped model"
    for path in shipped:
        policy = load_checkpoint(path)
        assert not policy.training and policy.config.num_inference_steps >= 1
