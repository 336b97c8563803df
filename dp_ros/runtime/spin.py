"""An rclpy executor spun in a background thread, and stopped without racing it.

Runners (deploy, eval, faults, the servo bench) and the integration tests keep a node of their own
that a background thread spins while the main thread drives the graph. Stopping that thread with
Executor.shutdown() while it waits inside the executor is a race in rclpy (ros2/rclpy#968, open in
rclpy 9): shutdown() does not wait for the spin to leave, it destroys the guard condition the
waiting spin holds. A runner whose episode had finished then hung on its way out in CI until the
test's timeout killed it. Here the thread spins one wait at a time and checks a flag between
waits; stop() sets the flag, joins the thread, and only then shuts the executor down.
"""

from __future__ import annotations

import sys
import threading
import traceback

# How long one wait may last when nothing arrives: the most stop() waits for an idle thread.
WAIT_S = 0.1


class SpinThread:
    """Spins `executor` in a daemon thread from construction until stop()."""

    def __init__(self, executor, name: str = "ros-spin"):
        self.executor = executor
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self.thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        context = self.executor.context
        try:
            while not self._stopping.is_set() and context.ok():
                self.executor.spin_once(timeout_sec=WAIT_S)
        except ExternalShutdownException:   # rclpy.shutdown() elsewhere: nothing left to spin
            pass

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop spinning and shut the executor down; False (said on stderr, with where the thread
        is) when the thread is still inside a callback after timeout_s: the executor is then left
        as it is, since shutting it down under that callback is the race this class avoids."""
        self._stopping.set()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            frame = sys._current_frames().get(self.thread.ident)
            where = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
            print(f"[dp_ros] WARNING: {self.thread.name} still busy {timeout_s:.0f} s after stop:\n{where}",
                  file=sys.stderr, flush=True)
            return False
        self.executor.shutdown(timeout_sec=1.0)
        return True
