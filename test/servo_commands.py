"""What the servo commanded, as tests read it: /servo/command joined with /servo/state."""

import bisect

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data

from dp_ros import topics
from dp_ros.nodes.msgs import msg_to_pose, time_to_ns
from dp_ros.nodes.ur5_servo_node import STATE_QOS


class ServoCommandLog:
    """A list of (stamp_ns, pose, holding) per command received. `holding` comes from the latest
    /servo/state at or before the command's stamp (the servo stamps both with the tick's time);
    the two topics may arrive in either order, so it is looked up when read."""

    def __init__(self, node):
        self._commands = []
        self._states = []     # (stamp_ns, holding), sorted by stamp
        node.create_subscription(PoseStamped, topics.SERVO_COMMAND,
                                 lambda m: self._commands.append((time_to_ns(m.header.stamp), msg_to_pose(m))),
                                 qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, topics.SERVO_STATE, self._on_state, STATE_QOS)

    def _on_state(self, msg):
        holding = {kv.key: kv.value for kv in msg.status[0].values}["holding"] == "True"
        bisect.insort(self._states, (time_to_ns(msg.header.stamp), holding))

    def _holding(self, stamp_ns):
        i = bisect.bisect_right(self._states, (stamp_ns, True))
        return self._states[i - 1][1] if i else True   # before any state: the servo starts holding

    def __len__(self):
        return len(self._commands)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [(t, p, self._holding(t)) for t, p in self._commands[index]]
        t, p = self._commands[index]
        return t, p, self._holding(t)

    def __iter__(self):
        return iter(self[:])

    def clear(self):
        self._commands.clear()   # states stay: they say what holds from their stamp on
