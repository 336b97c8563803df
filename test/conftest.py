import os
import random
import sys

import pytest

# ROS 2 from pip: the wheels need AMENT_PREFIX_PATH; a private DDS domain per test session keeps
# parallel runs (and other sessions on this host) from seeing each other's topics.
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(30, 100)))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Small tensors on a 2-core machine: OpenMP threads only contend (10-100x slower).
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
