"""A ROS domain of its own for each graph this machine runs (ROS-free).

Two graphs on one domain merge: a second `dp-ros deploy` saw the first one's diagnostics and both
servos' commands interleaved. A graph therefore claims a domain id with a lock file that its
runner holds while the graph runs: ROS_DOMAIN_ID when the user set it (refused if another graph
holds it), else the first free one from FIRST_DOMAIN. The runner's own ROS node and every node
process use it; the runner prints it so that `ros2 topic echo` and Foxglove can join.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

FIRST_DOMAIN = 42          # away from 0, the default that other ROS software on the machine uses
LAST_DOMAIN = 101          # 0-101 are valid on every platform with the default port mapping
LOCK_DIR = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")


class DomainInUse(RuntimeError):
    pass


class DomainClaim:
    """Holds the lock of one domain id until release() (or the process ends)."""

    def __init__(self, domain_id: int, fd: int, chosen: bool):
        self.domain_id, self._fd, self.chosen = domain_id, fd, chosen

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def describe(self) -> str:
        how = "a free one" if self.chosen else "from ROS_DOMAIN_ID"
        return f"ROS_DOMAIN_ID={self.domain_id} ({how}; set ROS_DOMAIN_ID to choose)"


def _try_lock(domain_id: int):
    path = LOCK_DIR / f"dp_ros-domain-{domain_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def claim(env: dict | None = None) -> DomainClaim:
    """Claim a domain for a graph. `env` (default os.environ) is read for ROS_DOMAIN_ID and gets
    the chosen id written into it."""
    env = os.environ if env is None else env
    requested = env.get("ROS_DOMAIN_ID", "").strip()
    if requested:
        domain_id = int(requested)
        fd = _try_lock(domain_id)
        if fd is None:
            raise DomainInUse(f"ROS_DOMAIN_ID={domain_id} is in use by another dp_ros graph on this machine: "
                              "stop it, or unset ROS_DOMAIN_ID to get a free domain")
        return DomainClaim(domain_id, fd, chosen=False)
    for domain_id in range(FIRST_DOMAIN, LAST_DOMAIN + 1):
        fd = _try_lock(domain_id)
        if fd is not None:
            env["ROS_DOMAIN_ID"] = str(domain_id)
            return DomainClaim(domain_id, fd, chosen=True)
    raise DomainInUse(f"no free ROS domain between {FIRST_DOMAIN} and {LAST_DOMAIN}")
