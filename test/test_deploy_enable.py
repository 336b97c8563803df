"""On hardware nothing moves until the operator enables it (issue 12 item 6): the graph's
scheduler does not autostart there, and `dp-ros deploy --hardware` says what enabling will do and
waits for Enter (or --enable, or the services without a terminal). No hardware needed."""

import os
from types import SimpleNamespace

import pytest
import yaml

from dp_ros import topics
from dp_ros.cli import deploy
from dp_ros.cli.deploy import hardware_plan, wait_for_operator
from dp_ros.graph import default_config, deploy_graph, load_params, read_checkpoint_config, write_params_file
from dp_ros.policy.untrained import make_untrained_checkpoint
from dp_ros.runtime.monitor import NodeDied


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "untrained", tiny=True)


def scheduler_params(specs, tmp_path):
    """The scheduler's start-up values as its process loads them: the config file, then the graph's file."""
    overrides = yaml.safe_load(write_params_file(tmp_path / "graph.yaml", specs).read_text())
    return {**load_params(default_config())["action_scheduler_node"],
            **overrides["action_scheduler_node"]["ros__parameters"]}


def test_scheduler_autostarts_in_sim_only(checkpoint, tmp_path):
    assert load_params(default_config())["action_scheduler_node"]["autostart"] is True
    assert scheduler_params(deploy_graph(sim=True, checkpoint=checkpoint), tmp_path)["autostart"] is True
    assert scheduler_params(deploy_graph(sim=False, checkpoint=checkpoint), tmp_path)["autostart"] is False


def test_the_plan_names_robot_box_speed_and_held_pose(checkpoint):
    specs = deploy_graph(sim=False, checkpoint=checkpoint)
    servo = load_params(default_config())["ur5_servo_node"]
    plan = hardware_plan(specs, default_config(), checkpoint, read_checkpoint_config(checkpoint))
    assert "nothing moves yet" in plan and servo["robot_host"] in plan
    assert f"z {servo['workspace_min'][2]:g}..{servo['workspace_max'][2]:g} m" in plan
    assert f"{servo['max_lin_speed']:g} m/s" in plan
    assert "commands xy" in plan and "height z 0.050 m" in plan        # the untrained model's fixed pose


def test_operator_go_ahead(capsys):
    def alive():
        pass
    assert wait_for_operator(True, None, alive)                          # --enable: no question
    r, w = os.pipe()
    with os.fdopen(r) as piped, os.fdopen(w, "w"):
        assert not wait_for_operator(False, piped, alive)               # no terminal: the services
    out = capsys.readouterr().out
    assert topics.SERVO_ENABLE in out and topics.SCHEDULER_ENABLE in out and "--enable" in out

    master, slave = os.openpty()                                         # a real terminal
    with os.fdopen(slave) as tty:
        os.write(master, b"\n")
        assert wait_for_operator(False, tty, alive, poll_s=0.01)
        assert "press Enter" in capsys.readouterr().out

        def dead():
            raise NodeDied("node ur5_servo_node exited with code 1")
        with pytest.raises(NodeDied):                                    # waiting never hides a dead graph
            wait_for_operator(False, tty, dead, poll_s=0.01)
    os.close(master)


def test_with_a_start_pose_the_arm_moves_there_between_servo_and_scheduler(checkpoint, monkeypatch):
    """The plan says where and how fast; enabling runs servo -> move to start -> scheduler (the move
    itself through the middleware: test_servo_start_move.py)."""
    specs = deploy_graph(sim=False, checkpoint=checkpoint)
    spec = next(s for s in specs if s.name == "ur5_servo_node")
    assert "start pose" not in hardware_plan(specs, default_config(), checkpoint, read_checkpoint_config(checkpoint))
    spec.overrides.update(move_to_start=True, start_pose=[0.5, 0.05, 0.12, 1.0, 0.0, 0.0, 0.0], start_move_speed=0.04)
    plan = hardware_plan(specs, default_config(), checkpoint, read_checkpoint_config(checkpoint))
    assert "first the TCP moves at 0.04 m/s to the start pose x 0.5 y 0.05 z 0.12 m" in plan

    calls = []

    def call(name, value):
        calls.append(name)
        return SimpleNamespace(success=True, message="ok")
    monitor = SimpleNamespace(node=SimpleNamespace(create_client=lambda *a: None), call=call)
    monkeypatch.setattr(deploy, "move_to_start", lambda m, servo, alive: calls.append(("move", servo["start_pose"])))
    deploy.enable_on_hardware(monitor, None, lambda: None, start_move=deploy.servo_params(specs, default_config()))
    assert calls == ["servo", ("move", [0.5, 0.05, 0.12, 1.0, 0.0, 0.0, 0.0]), "scheduler"]
    calls.clear()
    deploy.enable_on_hardware(monitor, None, lambda: None)                   # no start pose: no move
    assert calls == ["servo", "scheduler"]


def test_a_start_pose_outside_the_box_is_refused_before_anything_starts(checkpoint, tmp_path, capsys):
    data = yaml.safe_load(default_config().read_text())
    data["ur5_servo_node"]["ros__parameters"].update(move_to_start=True, start_pose=[0.9, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0])
    config = tmp_path / "deploy.yaml"
    config.write_text(yaml.safe_dump(data))
    assert deploy.main(["--hardware", "--checkpoint", str(checkpoint), "--config", str(config),
                        "--log-dir", str(tmp_path / "logs")]) == 2
    assert "start_pose position [0.9, 0.0, 0.1] is outside the workspace box" in capsys.readouterr().err
