"""camera_node: one sensor_msgs/Image topic per camera, stamped with the frame's capture time."""

import threading

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from dp_ros import topics
from dp_ros.nodes import backends
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import image_to_msg


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        self.p = declare(self, "camera_node")
        self.diag = Diagnostics(self)
        self._running = True
        self.cameras = []
        for i, name in enumerate(self.p["camera_names"]):
            backend = backends.camera(self, self.p, i, name)
            pub = self.create_publisher(Image, topics.CAMERA_IMAGE.format(name=name), qos_profile_sensor_data)
            backend.start()
            thread = threading.Thread(target=self._pump, args=(name, backend, pub), daemon=True)
            self.cameras.append((name, backend, thread))
            thread.start()
        self.create_timer(1.0, self._report)
        self.get_logger().info(f"cameras {self.p['camera_names']} on backend {self.p['backend']}")

    def _pump(self, name, backend, pub):
        # Blocking reads in a thread per camera: capture never waits on the executor.
        while self._running:
            frame = backend.read(timeout_s=0.5)
            if frame is None:
                continue
            pub.publish(image_to_msg(frame.image, int(round(frame.capture_time_s * 1e9)), f"camera_{name}"))

    def _report(self):
        values = {}
        for name, backend, _ in self.cameras:
            stats = backend.stats
            values.update({f"{name}.frames": stats.frames, f"{name}.dropped": stats.dropped})
        self.diag.publish("ok", "streaming", values)

    def close(self):
        self._running = False
        for _, backend, thread in self.cameras:
            thread.join(timeout=1.0)
            backend.stop()


def main(args=None):
    return run(CameraNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
