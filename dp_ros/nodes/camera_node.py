"""camera_node: one sensor_msgs/Image topic per camera, stamped with the frame's capture time.

Each camera is read by a pump thread of its own that never dies silently: an exception, or no
frame for `frame_timeout_s`, marks the camera failed (ERROR on /diagnostics with the reason)
and the pipeline is restarted every `restart_interval_s` until frames come again. Frames older
than `max_frame_age_s` on arrival are counted (WARN): the stamp is the capture time, so a late
frame is still correctly stamped, but a camera that delivers late starves the policy."""

import threading
import time

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from dp_ros import topics
from dp_ros.nodes import backends
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import image_to_msg


class CameraHealth:
    """What a pump thread saw, read by the diagnostics timer."""

    def __init__(self):
        self.last_frame = time.monotonic()   # start-up counts as the first frame time
        self.last_age_s = None
        self.stale = 0
        self.restarts = 0
        self.error = None


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        self.p = p = declare(self, "camera_node")
        self.frame_timeout_s = p["frame_timeout_s"]
        self.max_frame_age_s = p["max_frame_age_s"]
        self.restart_interval_s = p["restart_interval_s"]
        self.diag = Diagnostics(self)
        self._running = True
        self.cameras = []
        for i, name in enumerate(p["camera_names"]):
            backend = backends.camera(self, p, i, name)
            pub = self.create_publisher(Image, topics.CAMERA_IMAGE.format(name=name), qos_profile_sensor_data)
            backend.start()
            applied = getattr(backend, "applied_options", None)
            if applied:
                self.get_logger().info(f"camera {name}: {applied}")
            health = CameraHealth()
            thread = threading.Thread(target=self._pump, args=(name, backend, pub, health), daemon=True)
            self.cameras.append((name, backend, thread, health))
            thread.start()
        self.create_timer(1.0, self._report)
        self.get_logger().info(f"cameras {p['camera_names']} on backend {p['backend']}")

    def _pump(self, name, backend, pub, health):
        # Blocking reads in a thread per camera: capture never waits on the executor.
        while self._running:
            try:
                frame = backend.read(timeout_s=0.5)
                if frame is None:
                    if time.monotonic() - health.last_frame > self.frame_timeout_s:
                        self._fail(name, backend, health, f"no frame for {time.monotonic() - health.last_frame:.1f} s")
                    continue
                stamp_ns = int(round(frame.capture_time_s * 1e9))
                pub.publish(image_to_msg(frame.image, stamp_ns, f"camera_{name}"))
                health.last_age_s = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
                if health.last_age_s > self.max_frame_age_s:
                    health.stale += 1
                health.last_frame = time.monotonic()
                if health.error:
                    self.get_logger().info(f"camera {name} streaming again")
                    health.error = None
            except Exception as exc:  # noqa: BLE001 - reported, then the pipeline is restarted
                self._fail(name, backend, health, f"{type(exc).__name__}: {exc}")

    def _fail(self, name, backend, health, reason):
        if health.error is None:
            self.get_logger().error(f"camera {name}: {reason}; restarting it every {self.restart_interval_s} s")
        health.error = reason
        time.sleep(self.restart_interval_s)
        if not self._running:
            return
        try:
            backend.stop()
            backend.start()
            health.restarts += 1
            health.last_frame = time.monotonic()   # give the restarted pipeline its timeout
        except Exception as exc:  # noqa: BLE001
            health.error = f"{reason}; restart failed: {exc}"

    def _report(self):
        values, errors, stale = {}, [], 0
        for name, backend, _, health in self.cameras:
            stats = backend.stats
            values.update({f"{name}.frames": stats.frames, f"{name}.dropped": stats.dropped,
                           f"{name}.stale": health.stale, f"{name}.restarts": health.restarts})
            if health.last_age_s is not None:
                values[f"{name}.age_s"] = round(health.last_age_s, 4)
            if health.error:
                errors.append(f"{name}: {health.error}")
            stale += health.stale
        if errors:
            self.diag.publish("error", "; ".join(errors), values)
        elif stale:
            self.diag.publish("warn", f"{stale} frames older than {self.max_frame_age_s} s on arrival", values)
        else:
            self.diag.publish("ok", "streaming", values)

    def close(self):
        self._running = False
        for _, backend, thread, _ in self.cameras:
            thread.join(timeout=1.0)
            backend.stop()


def main(args=None):
    return run(CameraNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
