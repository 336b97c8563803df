"""UR5 over RTDE (ur_rtde): state in, servoL out, and the controller's faults.

UR poses are [x, y, z, rx, ry, rz] with a rotation vector; ours are [x, y, z, qx, qy, qz, qw].
ur_rtde is imported inside the constructors so this module (and its conversions) imports without
the library or a robot.

Servo: ur5_servo_node calls RTDEServo.servo(pose, dt_s) once per tick of its own fixed-rate
loop (125 Hz CB3 / 500 Hz e-Series); servoL returns at once and the controller tracks the target
for dt_s. hold() is servoStop; stop() also stops the script and disconnects. fault() says why
the arm is not following (safety stop, program stopped, connection lost, frozen state); recover()
re-uploads the control script once the operator has cleared the cause.

Both ends need the robot in Remote Control (e-Series) and no other client driving it: ur_rtde
uploads its own control script (no External Control program, no UR ROS driver at the same time).
"""

import time
from typing import Optional

import numpy as np

from dp_ros.core.transforms import quat_to_rotvec, rotvec_to_quat  # noqa: F401 (re-exported)

from . import ur_status
from .base import RobotControlBackend, RobotReceiveBackend, RobotStateSample
from .robot_clock import RobotClock

# The hemisphere every streamed quaternion is kept in: tool pointing down (180 deg about x),
# the working orientation of a table-top task. A fixed reference, so the sign near tool-down
# never depends on which sample came first.
TOOL_DOWN = np.array([1.0, 0.0, 0.0, 0.0])

# what the receive backend asks the controller for (fewer than ur_rtde's default of everything)
RECEIVE_VARIABLES = ["timestamp", "actual_TCP_pose", "actual_q", "robot_mode", "safety_mode",
                     "safety_status_bits", "robot_status_bits", "runtime_state"]


def ur_pose_to_pose(ur_pose, reference=TOOL_DOWN):
    """UR [x, y, z, rx, ry, rz] -> (7,) [x, y, z, qx, qy, qz, qw], the quaternion on the
    hemisphere of `reference` (q and -q are the same rotation; the controller's rotation vector
    flips between +-pi representations near 180 deg, which would flip a naive conversion)."""
    p = np.asarray(ur_pose, dtype=float).reshape(6)
    q = rotvec_to_quat(p[3:])
    if np.dot(q, np.asarray(reference, dtype=float)) < 0:
        q = -q
    return np.concatenate([p[:3], q])


def pose_to_ur_pose(pose):
    """(7,) [x, y, z, qx, qy, qz, qw] -> UR [x, y, z, rx, ry, rz] as a list of floats."""
    p = np.asarray(pose, dtype=float).reshape(7)
    return [float(v) for v in np.concatenate([p[:3], quat_to_rotvec(p[3:])])]


def connection_error(host, what: str, exc: Exception) -> RuntimeError:
    """A connection failure, with the host and what to check (ur_rtde says only e.g.
    'read: End of file')."""
    text = str(exc)
    low = text.lower()
    if "remote control" in low:
        hint = "switch the robot to Remote Control on the teach pendant (e-Series: top-right icon)"
    elif "in use" in low or "in_use" in low:
        hint = ("another client already writes the RTDE input registers: stop the UR ROS driver, another dp_ros "
                "or an EtherNet/IP / PROFINET / MODBUS adapter")
    elif "end of file" in low or "reset by peer" in low:
        hint = ("the controller closed the connection: is another client (UR ROS driver, another dp_ros) connected, "
                "or the robot still booting?")
    else:
        hint = (f"is the robot on and reachable (ping {host}; robot_host right)? on e-Series, is it in Remote "
                "Control mode?")
    return RuntimeError(f"cannot connect {what} to the UR controller at {host}: {text} -- {hint}")


class RTDEReceive(RobotReceiveBackend):
    """Robot state from RTDEReceiveInterface.

    Clock: `time_s` is the controller's own `timestamp` mapped onto the host's time.time() (Unix
    epoch seconds, the clock of ROS system time and RealSense global timestamps) by RobotClock;
    `robot_time_s` is the raw controller timestamp. A sample whose controller time did not
    advance has the same time_s as the one before, so it is never new data.
    """

    def __init__(self, host, frequency_hz=-1.0, quat_reference=TOOL_DOWN, state_timeout_s=0.1):
        import rtde_receive

        self.host = host
        self.quat_reference = np.asarray(quat_reference, dtype=float)
        self.state_timeout_s = float(state_timeout_s)
        self.clock = RobotClock()
        try:
            self._rtde = rtde_receive.RTDEReceiveInterface(host, float(frequency_hz), RECEIVE_VARIABLES)
        except RuntimeError as exc:
            raise connection_error(host, "RTDE receive (port 30004)", exc) from None
        self._last_robot_time = None
        self._last_advance = time.monotonic()

    def _observe(self, robot_time):
        if robot_time != self._last_robot_time:
            self._last_robot_time = robot_time
            self._last_advance = time.monotonic()

    def read(self) -> Optional[RobotStateSample]:
        r = self._rtde
        if r is None:
            return None
        robot_time = float(r.getTimestamp())
        pose = ur_pose_to_pose(r.getActualTCPPose(), self.quat_reference)
        joints = np.asarray(r.getActualQ(), dtype=float)
        self._observe(robot_time)
        return RobotStateSample(time_s=self.clock.stamp(robot_time, time.time()), tcp_pose=pose, joints=joints,
                                robot_time_s=robot_time)

    def fresh_status(self, timeout_s=1.0) -> dict:
        """status() from a package the controller sent after this call (not one read before
        the operator acted)."""
        r = self._rtde
        before, deadline = r.getTimestamp(), time.monotonic() + timeout_s
        while r.getTimestamp() == before and time.monotonic() < deadline:
            time.sleep(0.002)
        return self.status()

    def status(self) -> dict:
        """The controller's status words (ur_status names them)."""
        r = self._rtde
        return {"safety_mode": r.getSafetyMode(), "safety_status_bits": r.getSafetyStatusBits(),
                "robot_mode": r.getRobotMode(), "robot_status_bits": r.getRobotStatus(),
                "runtime_state": r.getRuntimeState()}

    def fault(self) -> Optional[str]:
        r = self._rtde
        if r is None:
            return "RTDE receive closed"
        if not r.isConnected():
            return f"connection to the UR controller at {self.host} lost (RTDE receive)"
        self._observe(float(r.getTimestamp()))
        quiet = time.monotonic() - self._last_advance
        if quiet > self.state_timeout_s:
            # worded without the growing duration: the same fault reads the same on every poll
            return (f"no new state from the UR controller at {self.host} for over {self.state_timeout_s} s "
                    f"(its clock stands at {self._last_robot_time:.3f} s)")
        s = self.status()
        return ur_status.controller_fault(s["safety_mode"], s["safety_status_bits"], s["robot_mode"])

    def connection_lost(self) -> bool:
        return self._rtde is not None and not self._rtde.isConnected()

    def reconnect(self):
        if self._rtde is not None and not self._rtde.isConnected() and not self._rtde.reconnect():
            raise RuntimeError(f"cannot reconnect RTDE receive to the UR controller at {self.host}")
        self._last_advance = time.monotonic()

    def close(self):
        if self._rtde is not None:
            self._rtde.disconnect()
            self._rtde = None


class RTDEServo(RobotControlBackend):
    """servoL streaming through RTDEControlInterface.

    lookahead_time (0.03-0.2 s) smooths the trajectory; gain (100-2000) is servoL's proportional
    gain. servoL's speed and acceleration arguments are unused by the controller.

    On connect: setTcp(tcp_offset) and setPayload(payload_kg, payload_cog) when given (None
    leaves the pendant's), and with watchdog_hz > 0 ur_rtde's watchdog: the control program
    stops when no command arrives for 1/watchdog_hz s, so a killed servo process does not leave
    the controller servoing. `setup` says what was applied. The safety state comes from a
    receive connection of its own (the control interface does not expose it).
    """

    def __init__(self, host, frequency_hz=500.0, lookahead_time=0.1, gain=300.0, rt_priority=0,
                 tcp_offset=None, payload_kg=None, payload_cog=None, watchdog_hz=0.0):
        import rtde_control

        if not 0.03 <= lookahead_time <= 0.2:
            raise ValueError("lookahead_time must be in [0.03, 0.2] s")
        if not 100 <= gain <= 2000:
            raise ValueError("gain must be in [100, 2000]")
        self.host = host
        self.frequency_hz = float(frequency_hz)
        self.dt_s = 1.0 / self.frequency_hz
        self.lookahead_time = float(lookahead_time)
        self.gain = float(gain)
        self.tcp_offset = None if tcp_offset is None else [float(v) for v in tcp_offset]
        self.payload_kg = None if payload_kg is None else float(payload_kg)
        self.payload_cog = [float(v) for v in (payload_cog if payload_cog is not None else [0.0, 0.0, 0.0])]
        self.watchdog_hz = float(watchdog_hz)
        # rt_priority: SCHED_FIFO for ur_rtde's own receive thread (0 = leave it as it is)
        try:
            self._ctrl = rtde_control.RTDEControlInterface(
                host, self.frequency_hz, rtde_control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT, 50002, int(rt_priority))
        except RuntimeError as exc:
            raise connection_error(host, "RTDE control (ports 29999, 30003, 30004)", exc) from None
        self._monitor = RTDEReceive(host, self.frequency_hz)
        self._servoing = False
        self._refused = None
        self._stop_seen = False   # fault() has waited for the monitor once since the last recovery
        self.setup = self._apply_setup()

    def _apply_setup(self) -> dict:
        c, done = self._ctrl, {}
        if self.tcp_offset is not None:
            if not c.setTcp(self.tcp_offset):
                raise RuntimeError(f"setTcp({self.tcp_offset}) refused by the controller at {self.host}")
            done["tcp_offset"] = list(self.tcp_offset)
        if self.payload_kg is not None:
            if not c.setPayload(self.payload_kg, self.payload_cog):
                raise RuntimeError(f"setPayload({self.payload_kg} kg) refused by the controller at {self.host}")
            done["payload_kg"], done["payload_cog"] = self.payload_kg, list(self.payload_cog)
        if self.watchdog_hz > 0:
            c.setWatchdog(self.watchdog_hz)
            done["watchdog_hz"] = self.watchdog_hz
        return done

    def describe_setup(self) -> str:
        s = self.setup
        tcp = f"TCP offset {s['tcp_offset']} (setTcp)" if "tcp_offset" in s else "TCP: the pendant's active TCP"
        load = (f"payload {s['payload_kg']} kg at {s['payload_cog']} (setPayload)" if "payload_kg" in s
                else "payload: the pendant's")
        dog = f"watchdog {s['watchdog_hz']} Hz" if "watchdog_hz" in s else "no watchdog"
        return f"{tcp}; {load}; {dog}"

    def servo(self, pose, dt_s=None):
        if self._ctrl is None:
            raise RuntimeError("RTDEServo is stopped")
        ok = self._ctrl.servoL(pose_to_ur_pose(pose), 0.5, 0.5, float(dt_s or self.dt_s),
                               self.lookahead_time, self.gain)
        self._servoing = True
        if not ok and self._refused is None:
            # ur_rtde refuses when the program is stopped or the robot is protective / e-stopped
            self._refused = "servoL refused by the controller"
        return ok

    def fault(self) -> Optional[str]:
        c = self._ctrl
        if c is None:
            return "RTDE control stopped"
        if not c.isConnected():
            return f"connection to the UR controller at {self.host} lost (RTDE control)"
        reason = self._monitor.fault()
        if reason is None and not self._stop_seen and (self._refused or not c.isProgramRunning()):
            # The control connection can see the program stop (or servoL refused) a package before
            # the monitor's connection sees the safety stop that caused it, and the servo latches
            # the first reason: wait once for a package sent after this, so that the reason is
            # the stop itself, not "program not running".
            self._stop_seen = True
            self._monitor.fresh_status(timeout_s=0.25)
            reason = self._monitor.fault()
        if reason is None and not c.isProgramRunning():
            reason = "control program not running (stopped on the pendant, by a safety stop or the watchdog)"
        if reason is None and self._refused:
            reason = self._refused
        if reason is None and self.watchdog_hz > 0 and not self._servoing:
            c.kickWatchdog()   # holding: no servoL writes the watched register, so kick it
        return reason

    def unanswered(self, seconds: float) -> str:
        # ur_rtde blocks its calls while its own thread reconnects after a lost connection
        return (f"no answer from the UR controller at {self.host} for {seconds:.1f} s: an RTDE call is "
                f"blocked (connection lost?)")

    def recover(self) -> None:
        c = self._ctrl
        if c is None:
            raise RuntimeError("RTDE control stopped")
        if not c.isConnected() and not c.reconnect():
            raise RuntimeError(f"cannot reconnect to the UR controller at {self.host}")
        self._monitor.reconnect()
        s = self._monitor.fresh_status()
        reason = ur_status.controller_fault(s.get("safety_mode"), s.get("safety_status_bits"), s.get("robot_mode"))
        if reason:
            raise RuntimeError(f"{reason} at {self.host}: clear it on the teach pendant (release the e-stop / unlock "
                               f"the protective stop after inspecting its cause, power on), then reset again")
        if not c.isProgramRunning():
            c.reuploadScript()
            deadline = time.monotonic() + 5.0
            while not c.isProgramRunning() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not c.isProgramRunning():
                raise RuntimeError(f"the control script did not start on {self.host}: is the robot in Remote Control "
                                   f"and no other program or client running?")
        self._refused = None
        self._servoing = False
        self._stop_seen = False
        self.setup = self._apply_setup()

    def hold(self, deceleration=10.0):
        if self._ctrl is not None and self._servoing:
            self._ctrl.servoStop(float(deceleration))
        self._servoing = False

    def stop(self):
        if self._ctrl is None:
            return
        try:
            self.hold()
            self._ctrl.stopScript()
        finally:
            self._ctrl.disconnect()
            self._ctrl = None
            self._monitor.close()
