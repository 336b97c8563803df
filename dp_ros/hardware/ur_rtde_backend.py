"""UR5 over RTDE (ur_rtde): state in, servoL out.

UR poses are [x, y, z, rx, ry, rz] with a rotation vector; ours are [x, y, z, qx, qy, qz, qw].
ur_rtde is imported inside the constructors so this module (and its conversions) imports without
the library or a robot.

Servo: ur5_servo_node calls RTDEServo.servo(pose, dt_s) once per tick of its own fixed-rate
loop (125 Hz CB3 / 500 Hz e-Series); servoL returns at once and the controller tracks the target
for dt_s. hold() is servoStop; stop() also stops the script and disconnects.
"""

import time

import numpy as np

from dp_ros.core.transforms import quat_to_rotvec, rotvec_to_quat  # noqa: F401 (re-exported)

from .base import RobotControlBackend, RobotReceiveBackend, RobotStateSample


def ur_pose_to_pose(ur_pose, prev_quat=None):
    """UR [x, y, z, rx, ry, rz] -> (7,) [x, y, z, qx, qy, qz, qw].

    The controller's rotation vector flips representation near 180 deg (e.g. tool pointing down),
    which would flip the quaternion's sign; with prev_quat the sign is chosen to stay on its
    hemisphere so streamed orientations are continuous.
    """
    p = np.asarray(ur_pose, dtype=float).reshape(6)
    q = rotvec_to_quat(p[3:])
    if prev_quat is not None and np.dot(q, prev_quat) < 0:
        q = -q
    return np.concatenate([p[:3], q])


def pose_to_ur_pose(pose):
    """(7,) [x, y, z, qx, qy, qz, qw] -> UR [x, y, z, rx, ry, rz] as a list of floats."""
    p = np.asarray(pose, dtype=float).reshape(7)
    return [float(v) for v in np.concatenate([p[:3], quat_to_rotvec(p[3:])])]


class RTDEReceive(RobotReceiveBackend):
    """Robot state from RTDEReceiveInterface.

    Clock: `time_s` is the host's time.time() (Unix epoch seconds, the clock of ROS system time
    and RealSense global timestamps) when the sample was read; `robot_time_s` is the
    controller's own timestamp (seconds since the controller started).
    """

    def __init__(self, host, frequency_hz=-1.0):
        import rtde_receive

        self.host = host
        self._rtde = rtde_receive.RTDEReceiveInterface(host, float(frequency_hz))
        self._prev_quat = None

    def read(self) -> RobotStateSample:
        r = self._rtde
        t = time.time()
        pose = ur_pose_to_pose(r.getActualTCPPose(), self._prev_quat)
        self._prev_quat = pose[3:]
        return RobotStateSample(time_s=t, tcp_pose=pose, joints=np.asarray(r.getActualQ(), dtype=float),
                                robot_time_s=float(r.getTimestamp()))

    def close(self):
        if self._rtde is not None:
            self._rtde.disconnect()
            self._rtde = None


class RTDEServo(RobotControlBackend):
    """servoL streaming through RTDEControlInterface.

    lookahead_time (0.03-0.2 s) smooths the trajectory; gain (100-2000) is servoL's proportional
    gain. servoL's speed and acceleration arguments are unused by the controller.
    """

    def __init__(self, host, frequency_hz=500.0, lookahead_time=0.1, gain=300.0, rt_priority=0):
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
        # rt_priority: SCHED_FIFO for ur_rtde's own receive thread (0 = leave it as it is)
        self._ctrl = rtde_control.RTDEControlInterface(host, self.frequency_hz,
                                                       rtde_control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT,
                                                       50002, int(rt_priority))
        self._servoing = False

    def servo(self, pose, dt_s=None):
        if self._ctrl is None:
            raise RuntimeError("RTDEServo is stopped")
        ok = self._ctrl.servoL(pose_to_ur_pose(pose), 0.5, 0.5, float(dt_s or self.dt_s),
                               self.lookahead_time, self.gain)
        self._servoing = True
        return ok

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
