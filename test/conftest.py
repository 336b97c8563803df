import os
import random
import sys

# ROS 2 from pip: the wheels need AMENT_PREFIX_PATH; a private DDS domain per test session keeps
# parallel runs (and other sessions on this host) from seeing each other's topics.
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(30, 100)))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
