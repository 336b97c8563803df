"""CPU priority of the graph's processes, best effort (ROS-free).

On Linux with autogroup scheduling (the default on desktop kernels) a process started in a
session of its own (`dp-ros deploy` starts each node so) competes with other sessions by its
autogroup's nice value, not its own: both are set.
"""

import os

# Every node of the graph runs ahead of unrelated work on the machine (the inference process and
# the servo loop ask for more). Best effort: without CAP_SYS_NICE it stays at the default.
GRAPH_NICE = -5
# SCHED_RR priority of the light periodic nodes that stream sensor data (camera, robot state, the
# recorder, the sim world); the servo loop asks for SCHED_FIFO 80 itself.
NODE_RT_PRIORITY = 10


def normal_scheduling() -> None:
    """Back to the normal class (a process started by a real-time node inherits its class)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass


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


def realtime(policy: str, priority: int, inherit: bool = False) -> str:
    """policy "SCHED_RR" or "SCHED_FIFO" at `priority` for the calling thread. inherit=False:
    threads and processes it starts later begin in the normal class (SCHED_RESET_ON_FORK applies
    to both), so a thread that must stay real-time calls this itself. inherit=True: they keep it,
    for a node set up before its middleware starts: the DDS receive threads then deliver on time
    beside busy processes (in the normal class they delayed robot state by more than 0.25 s). For light, periodic
    work only (it sleeps between short callbacks): the kernel's real-time throttling (95 % of
    each CPU by default) is the only bound on a runaway one. Returns what was granted."""
    if int(priority) <= 0:
        return f"normal scheduling (priority {priority})"
    try:
        flags = 0 if inherit else os.SCHED_RESET_ON_FORK
        os.sched_setscheduler(0, getattr(os, policy) | flags, os.sched_param(int(priority)))
        return f"{policy} {priority}"
    except (OSError, AttributeError) as exc:
        return f"normal scheduling ({policy} not permitted: {exc})"
