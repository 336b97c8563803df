"""Running a graph from Python without launch_ros: node processes, the monitor node that drives
them, and the episode loops the command-line tools share."""
