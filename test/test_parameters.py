"""Typed parameters: the shipped config matches the specs, a wrong config is a clear error before
anything starts, and a declared parameter says what it is and refuses a change at run time."""

import math

import pytest
import rclpy
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter

from dp_ros.core.parameters import NODE_PARAMETERS, defaults, validate
from dp_ros.graph import default_checkpoint, default_config, deploy_graph, load_params, teleop_graph
from dp_ros.nodes.common import declare

SET_BY_GRAPH = {"action_scheduler_node": {"obs_horizon", "dt_s"}}


def test_shipped_config_matches_the_specs_exactly():
    config = load_params(default_config())
    assert set(config) == set(NODE_PARAMETERS)
    for node, spec in NODE_PARAMETERS.items():
        values = defaults(node, config)
        assert set(spec) - set(values) == SET_BY_GRAPH.get(node, set()), node
        validate(node, values, complete=False)
        for name, p in spec.items():
            assert p.description, f"{node}.{name} has no description"


def _config_with(tmp_path, node, **changes):
    data = yaml.safe_load(default_config().read_text())
    data[node]["ros__parameters"].update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("node,change,message", [
    ("ur5_servo_node", {"max_lin_speed": "fast"}, "'ur5_servo_node.max_lin_speed': expected float"),
    ("ur5_servo_node", {"max_lin_sped": 0.1}, "unknown parameter(s) ['max_lin_sped']"),
    ("ur5_servo_node", {"max_lin_speed": 30.0}, "outside [0.001, 3.0]"),
    ("ur5_servo_node", {"workspace_min": [0.3, 0.0]}, "expected 3 values"),
    ("ur5_servo_node", {"max_lin_acc": math.nan}, "must be finite"),
    ("action_scheduler_node", {"stitch": "average"}, "is not one of 'blend', 'ensemble', 'none'"),
    ("policy_node", {"torch_threads": True}, "expected int"),
])
def test_a_wrong_config_is_refused_before_any_process_starts(tmp_path, node, change, message):
    path = _config_with(tmp_path, node, **change)
    with pytest.raises(ValueError) as err:
        deploy_graph(sim=True, checkpoint=default_checkpoint(), config_file=path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_teleop_graph_checks_its_config_too(tmp_path):
    path = _config_with(tmp_path, "teleop_node", deadzone=1.5)
    with pytest.raises(ValueError, match=r"'teleop_node.deadzone': 1.5 is outside \[0.0, 0.99\]"):
        teleop_graph(sim=True, config_file=path)


@pytest.fixture
def ros():
    rclpy.init(args=[])
    yield
    rclpy.shutdown()


def test_declared_parameters_describe_themselves_and_refuse_changes(ros):
    node = Node("ur5_servo_node")
    try:
        values = declare(node, "ur5_servo_node")
        assert values["max_lin_speed"] == load_params(default_config())["ur5_servo_node"]["max_lin_speed"]
        (desc,) = node.describe_parameters(["max_lin_speed"])
        assert "speed limit" in desc.description and desc.read_only
        assert desc.floating_point_range[0].to_value == pytest.approx(3.0)
        (result,) = node.set_parameters([Parameter("max_lin_speed", value=2.0)])
        assert not result.successful                      # a safety limit cannot change under the loop
        assert node.get_parameter("max_lin_speed").value == values["max_lin_speed"]
    finally:
        node.destroy_node()


@pytest.mark.parametrize("override,message", [
    (Parameter("gain", value=300), "ur5_servo_node.gain"),                 # int where a float is meant
    (Parameter("max_lin_speed", value=9.0), "ur5_servo_node.max_lin_speed"),
    (Parameter("backend", value="ur10"), "'ur10' is not one of 'rtde', 'sim'"),
])
def test_a_wrong_start_up_override_names_the_parameter(ros, override, message):
    node = Node("ur5_servo_node", parameter_overrides=[override])
    try:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
            declare(node, "ur5_servo_node")
    finally:
        node.destroy_node()


def test_values_set_by_the_graph_must_be_there(ros):
    node = Node("action_scheduler_node")
    try:
        with pytest.raises(ValueError, match="obs_horizon is not set .*set by the graph from the checkpoint"):
            declare(node, "action_scheduler_node")
    finally:
        node.destroy_node()
