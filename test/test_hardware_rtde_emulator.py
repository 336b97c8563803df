"""The real ur_rtde (RTDEReceiveInterface, RTDEControlInterface) against the controller emulator
(dp_ros/testing/rtde_emulator.py, in a process of its own), through the dp_ros backends: state,
every robot fault reaching fault(), setTcp / setPayload / watchdog, recovery, and the connection
errors naming the host and the cause."""

import time

import numpy as np
import pytest

pytest.importorskip("rtde_receive")
pytest.importorskip("rtde_control")

from dp_ros.hardware.ur_rtde_backend import RTDEReceive, RTDEServo, ur_pose_to_pose  # noqa: E402
from dp_ros.testing.process import InChildProcess  # noqa: E402
from dp_ros.testing.rtde_emulator import URControllerEmulator, free_loopback_host  # noqa: E402
from polling import wait_for  # noqa: E402



@pytest.fixture
def robot():
    emulator = InChildProcess(URControllerEmulator, free_loopback_host())
    emulator.host = emulator.snapshot()["host"]
    yield emulator
    emulator.close()


@pytest.fixture
def receive(robot):
    backend = RTDEReceive(robot.host, frequency_hz=125.0, state_timeout_s=0.2)
    yield backend
    backend.close()


def test_receive_reads_the_controller_state(robot, receive):
    wait_for(lambda: receive.fault() is None, what="no fault")
    first = receive.read()
    np.testing.assert_allclose(first.tcp_pose, ur_pose_to_pose(robot.snapshot()["tcp_pose"]), atol=1e-9)
    assert first.joints.shape == (6,)
    assert abs(first.time_s - time.time()) < 1.0            # controller clock mapped onto host time
    later = wait_for(lambda: (s := receive.read()).robot_time_s > first.robot_time_s + 0.05 and s)
    assert later.time_s <= time.time()                      # stamped when measured, never in the future
    # the offset only shrinks towards the fastest delivery (plus a slow drift allowance)
    assert 0 < later.time_s - first.time_s <= later.robot_time_s - first.robot_time_s + 1e-3


@pytest.mark.parametrize("inject, reason", [
    ("protective_stop", "protective stop"),
    ("emergency_stop", "emergency stop"),
])
def test_safety_stops_reach_fault(robot, receive, inject, reason):
    wait_for(lambda: receive.fault() is None, what="no fault")
    getattr(robot, inject)()
    assert reason in wait_for(receive.fault, what=reason)
    robot.clear_faults()
    wait_for(lambda: receive.fault() is None, what="fault cleared")


def test_dropped_connection_is_a_fault_naming_the_host(robot, receive):
    wait_for(lambda: receive.fault() is None, what="no fault")
    robot.drop_connections()
    fault = wait_for(receive.fault, what="connection fault")
    assert "lost" in fault and robot.host in fault


@pytest.mark.parametrize("inject", ["freeze_clock", "stall_stream"])
def test_frozen_robot_clock_is_a_fault_and_never_fresh_data(robot, receive, inject):
    wait_for(lambda: receive.fault() is None, what="no fault")
    getattr(robot, inject)()
    fault = wait_for(receive.fault, what="stale-state fault")
    assert "no new state" in fault
    # the same controller time -> the same stamp: nothing new to publish
    a = receive.read()
    time.sleep(0.1)
    b = receive.read()
    assert b.time_s == a.time_s and b.robot_time_s == a.robot_time_s
    getattr(robot, inject)(False)
    wait_for(lambda: receive.fault() is None, what="stream back")
    assert receive.read().time_s > a.time_s


def test_no_controller_names_host_and_what_to_check():
    host = free_loopback_host()   # nothing listens there
    with pytest.raises(RuntimeError, match=rf"{host}.*ping {host}"):
        RTDEReceive(host, frequency_hz=125.0)


@pytest.fixture
def servo(robot):
    backend = RTDEServo(robot.host, frequency_hz=125.0, tcp_offset=[0, 0, 0.13, 0, 0, 0], payload_kg=1.2,
                        payload_cog=[0, 0, 0.05], watchdog_hz=5.0)
    yield backend
    backend.stop()


def test_control_applies_setup_and_servos(robot, servo):
    snap = robot.snapshot()
    assert snap["program_running"]
    assert snap["tcp_offset"] == [0, 0, 0.13, 0, 0, 0] and snap["payload"] == 1.2
    assert "setTcp" in servo.describe_setup() and "setPayload" in servo.describe_setup()
    assert "is in remote control" in snap["dashboard"]   # ur_rtde checked Remote Control
    target = ur_pose_to_pose([0.45, 0.05, 0.15, np.pi, 0, 0])
    assert servo.servo(target, 0.008)
    wait_for(lambda: np.allclose(robot.snapshot()["tcp_pose"][:3], [0.45, 0.05, 0.15]), what="arm at target")
    assert servo.fault() is None
    servo.hold()


@pytest.mark.parametrize("inject, reason", [
    ("stop_program", "program not running"),
    ("protective_stop", "protective stop"),
    ("emergency_stop", "emergency stop"),
])
def test_control_faults_and_recovery(robot, servo, inject, reason):
    pose = ur_pose_to_pose([0.45, 0.05, 0.15, np.pi, 0, 0])
    assert servo.servo(pose, 0.008) and servo.fault() is None
    getattr(robot, inject)()
    # the control and the safety state come over two connections: for a few ms the first
    # reason can be "program not running" before the safety stop itself shows
    wait_for(lambda: reason in (servo.fault() or ""), what=reason)
    # servoL's refusal is seen, not dropped. It comes over the control connection, which can lag
    # the receive side's safety state by a scheduling slice on a loaded machine (seen with two
    # busy loops beside the suite): wait for it rather than assume the two views agree at once.
    wait_for(lambda: not servo.servo(pose, 0.008), what="servoL refused")
    if inject != "stop_program":
        with pytest.raises(RuntimeError, match=reason):
            servo.recover()                        # the operator must clear it on the pendant first
        robot.clear_faults()
    servo.recover()                                # re-uploads the control script
    assert robot.snapshot()["program_running"]
    assert servo.fault() is None
    assert servo.servo(pose, 0.008)


def test_watchdog_stops_the_program_when_nobody_commands(robot, servo):
    # holding: fault() (polled every servo tick) kicks the watchdog, the program keeps running
    servo.hold()
    t_end = time.monotonic() + 0.6
    while time.monotonic() < t_end:
        assert servo.fault() is None
        time.sleep(0.02)
    # nobody polls any more (a killed servo process): the controller stops the program
    wait_for(lambda: not robot.snapshot()["program_running"], what="watchdog stop")
    assert "program not running" in wait_for(servo.fault, what="fault reported")


def test_remote_control_off_is_named():
    host = free_loopback_host()
    with InChildProcess(URControllerEmulator, host, remote_control=False):
        with pytest.raises(RuntimeError, match=rf"{host}.*Remote Control"):
            RTDEServo(host, frequency_hz=125.0)


def test_second_client_is_named(robot, servo):
    with pytest.raises(RuntimeError, match=rf"{robot.host}.*another client"):
        RTDEServo(robot.host, frequency_hz=125.0)
