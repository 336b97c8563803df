"""What the servo commanded, as tests read it: /servo/command joined with /servo/state."""

import bisect

import numpy as np

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data

from dp_ros import topics
from dp_ros.core.command_check import outside_box, tick_limits
from dp_ros.nodes.msgs import msg_to_pose, time_to_ns
from dp_ros.nodes.common import STATE_QOS


class ServoCommandLog:
    """A list of (stamp_ns, pose, holding, resynced, tick) per command received. `holding` comes from the latest
    /servo/state at or before the command's stamp (the servo stamps both with the tick's time);
    the two topics may arrive in either order, so it is looked up when read."""

    def __init__(self, node):
        self._commands = []
        self._states = []     # (stamp_ns, holding), sorted by stamp
        self._resynced = set()   # stamps of commands that re-synced to the measured pose
        # the publication sequence number counts the servo's ticks (it publishes one command per
        # tick), exactly, even when this best-effort subscription misses some or the loop jitters
        node.create_subscription(PoseStamped, topics.SERVO_COMMAND,
                                 lambda m, info: self._commands.append((time_to_ns(m.header.stamp), msg_to_pose(m),
                                                                        info["publication_sequence_number"])),
                                 qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, topics.SERVO_STATE, self._on_state, STATE_QOS)

    def _on_state(self, msg):
        values = {kv.key: kv.value for kv in msg.status[0].values}
        stamp = time_to_ns(msg.header.stamp)
        bisect.insort(self._states, (stamp, values["holding"] == "True"))
        if values.get("resynced") == "True":
            self._resynced.add(stamp)

    def _holding(self, stamp_ns):
        i = bisect.bisect_right(self._states, (stamp_ns, True))
        return self._states[i - 1][1] if i else True   # before any state: the servo starts holding

    def __len__(self):
        return len(self._commands)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [(t, p, self._holding(t), t in self._resynced, seq) for t, p, seq in self._commands[index]]
        t, p, seq = self._commands[index]
        return t, p, self._holding(t), t in self._resynced, seq

    def __iter__(self):
        return iter(self[:])

    def clear(self):
        self._commands.clear()   # states stay: they say what holds from their stamp on


def check_envelope(cmds, servo: dict, tol: float = 1.01):
    """Every command against the whole envelope, per tick: inside the box, and speed,
    acceleration and rotation speed within the limits, with the servo's own period per tick."""
    assert np.all(np.isfinite([c[1] for c in cmds]))
    assert outside_box([c[1][:3] for c in cmds], servo["workspace_min"], servo["workspace_max"]) == 0.0
    assert np.allclose(np.linalg.norm([c[1][3:] for c in cmds], axis=1), 1.0, atol=1e-6)
    lim = tick_limits([c[4] for c in cmds], [c[1] for c in cmds], 1.0 / servo["rate_hz"], [c[3] for c in cmds])
    assert lim["max_speed"] <= servo["max_lin_speed"] * tol + 1e-9, lim
    assert lim["max_acc"] <= servo["max_lin_acc"] * tol + 1e-6, lim
    assert lim["max_ang_speed"] <= servo["max_ang_speed"] * tol + 1e-6, lim


def check_hold(cmds, t_hold_ns: int, servo: dict):
    """From the hold on, the command brakes within the limits and then stays put."""
    after = [c for c in cmds if c[0] >= t_hold_ns]
    assert after, "no command after the hold"
    pos = np.array([c[1][:3] for c in after])
    v, a = servo["max_lin_speed"], servo["max_lin_acc"]
    assert np.linalg.norm(pos - pos[0], axis=1).max() <= v * v / (2 * a) + v / servo["rate_hz"] + 1e-6
    settled = np.array([c[1][:3] for c in after if c[0] >= t_hold_ns + (v / a + 0.05) * 1e9])
    if len(settled):
        assert np.ptp(settled, axis=0).max() < 1e-9, "still moving after braking"


def final_hold_start(cmds) -> int:
    """Stamp of the first command of the hold that lasts to the end (a brief hold before it, e.g.
    a watchdog hold while the machine was busy, may have resumed)."""
    assert cmds and cmds[-1][2], "the servo is not holding at the end"
    k = len(cmds) - 1
    while k > 0 and cmds[k - 1][2]:
        k -= 1
    return cmds[k][0]
