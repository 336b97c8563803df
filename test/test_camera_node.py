"""camera_node's health through the real middleware, on its sim backend: a camera that stops
delivering frames is an ERROR on /diagnostics naming it, its pipeline is restarted, and when
frames come again it reports streaming (a RealSense that hangs looks the same to the node)."""

import os
import signal

import pytest

from dp_ros.graph import NodeSpec, check_graph, default_config
from dp_ros.runtime.monitor import GraphMonitor, wait_until
from dp_ros.runtime.processes import NodeProcesses

CAMERA = {"backend": "sim", "frame_timeout_s": 1.0, "restart_interval_s": 0.5}


@pytest.fixture
def graph(tmp_path):
    specs = check_graph([NodeSpec("sim_world_node", "sim_world_node", {}),
                         NodeSpec("camera_node", "camera_node", CAMERA)], default_config())
    procs = NodeProcesses(specs, default_config(), tmp_path / "logs").start()
    monitor = GraphMonitor()
    try:
        yield monitor, procs
    finally:
        monitor.close()
        procs.stop()


def camera(monitor):
    return monitor.diagnostics.get("camera_node", ("", {}))


def test_a_camera_without_frames_is_an_error_restarted_until_it_streams_again(graph):
    monitor, procs = graph
    wait_until(lambda: camera(monitor)[0] == "streaming", 120, procs, "the camera streaming")
    world = procs.procs["sim_world_node"].pid
    os.kill(world, signal.SIGSTOP)             # the frames stop coming (a hung camera)
    try:
        wait_until(lambda: "no frame for" in camera(monitor)[0], 60, procs, "the stalled camera reported")
        assert camera(monitor)[0].startswith("top: no frame for")
        wait_until(lambda: int(camera(monitor)[1].get("top.restarts", 0)) >= 1, 60, procs, "a pipeline restart")
    finally:
        os.kill(world, signal.SIGCONT)
    wait_until(lambda: camera(monitor)[0] == "streaming", 60, procs, "the camera streaming again")
