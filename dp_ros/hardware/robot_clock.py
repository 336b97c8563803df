"""Controller timestamps -> host time: a robot sample is stamped when the controller measured
it, not when the host happened to read it, and a frozen controller clock yields a frozen stamp
(never a fresh one)."""


class RobotClock:
    """offset = the smallest (host time - robot time) seen: the sample that reached the host
    fastest. It may grow by `drift_s_per_s` per second of robot time so a controller clock
    that runs slower than the host's is followed; a faster one lowers the minimum by itself.
    A robot time that goes backwards (controller restarted) starts afresh."""

    def __init__(self, drift_s_per_s: float = 1e-4):
        self.drift = float(drift_s_per_s)
        self.offset = None
        self._last_robot = None

    def stamp(self, robot_time_s: float, host_time_s: float) -> float:
        measured = host_time_s - robot_time_s
        if self.offset is None or robot_time_s < self._last_robot:
            self.offset = measured
        else:
            self.offset = min(self.offset + self.drift * (robot_time_s - self._last_robot), measured)
        self._last_robot = robot_time_s
        return robot_time_s + self.offset
