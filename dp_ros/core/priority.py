"""CPU priority of the graph's processes, best effort (ROS-free).

On Linux with autogroup scheduling (the default on desktop kernels) a process started in a
session of its own (`dp-ros deploy` starts each node so) competes with other sessions by its
autogroup's nice value, not its own: both are set.
"""

import os

# Every node of the graph runs ahead of unrelated work on the machine (the inference process and
# the servo loop ask for more). Best effort: without CAP_SYS_NICE it stays at the default.
GRAPH_NICE = -5


def raise_priority(nice: int) -> str:
    """Set this process's nice and its autogroup's to `nice` (< 0 needs CAP_SYS_NICE).
    Returns what was granted, for the node's log."""
    if nice >= 0:
        return "default"
    granted = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        granted.append(f"nice {nice}")
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
        granted.append(f"autogroup nice {nice}")
    except OSError:
        pass
    return ", ".join(granted) or "not permitted (needs CAP_SYS_NICE)"
