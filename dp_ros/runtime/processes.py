"""Start and stop the graph's nodes as separate processes (the pip-only stand-in for launch_ros)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dp_ros.graph import NodeSpec, ros_env, write_params_file
from dp_ros.runtime import domain


def executable(name: str) -> str:
    """The node's console script: next to this Python first (the venv), then PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"node executable {name!r} not found (is dp_ros installed?)")
    return found


class NodeProcesses:
    """One process per node, each with the config file and the graph's overrides as ROS
    parameter files, output to <log_dir>/<node>.log."""

    def __init__(self, specs: list[NodeSpec], config_file, log_dir, env=None):
        """env: the nodes' environment (default: this process's). The graph claims a ROS domain of
        its own (runtime/domain.py) on start; it is written into this process's environment too,
        so that a ROS node created here afterwards (the runner's monitor, a test) joins it."""
        self.specs = specs
        self.config_file = Path(config_file)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = ros_env(env)
        self.procs: dict[str, subprocess.Popen] = {}
        self.domain: domain.DomainClaim | None = None

    def start(self):
        if self.domain is None:
            self.domain = domain.claim(self.env)
            os.environ["ROS_DOMAIN_ID"] = str(self.domain.domain_id)
            print(f"[dp_ros] graph on {self.domain.describe()}", file=sys.stderr, flush=True)
        self._overrides = write_params_file(self.log_dir / "overrides.yaml", self.specs)
        for spec in self.specs:
            self._launch(spec, "wb")
        return self

    def _launch(self, spec: NodeSpec, mode: str):
        cmd = [executable(spec.executable), "--ros-args", "-r", f"__node:={spec.name}",
               "--params-file", str(self.config_file), "--params-file", str(self._overrides)]
        log = open(self.log_dir / f"{spec.name}.log", mode)
        # Own session: a Ctrl-C in the terminal reaches the runner, which stops nodes in order.
        # The graph's priority from the first instruction on, imports included (with two busy
        # loops beside it, the policy node's start-up then took ~40 s instead of ~55 s).
        self.procs[spec.name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=self.env, start_new_session=True,
                                                 preexec_fn=_graph_priority)
        log.close()

    def restart(self, name: str):
        """Start a node that died (or was killed) again, its log continued."""
        if self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._launch(next(s for s in self.specs if s.name == name), "ab")

    def dead(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, name: str):
        self.procs[name].send_signal(signal.SIGKILL)

    def stop(self, timeout_s: float = 5.0):
        """SIGINT to every node (the servo last: it holds the arm while everything upstream goes
        away), SIGKILL to any still running after timeout_s. A KeyboardInterrupt while waiting (a
        runner's first Ctrl-C arriving during a normal stop; stop_on_signals only reports later
        ones) kills the rest at once: the stop always completes, no node is left behind."""
        order = sorted(self.procs, key=lambda n: n == "ur5_servo_node")
        try:
            for name in order:
                p = self.procs[name]
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            deadline = time.monotonic() + timeout_s
            for name in order:
                try:
                    self.procs[name].wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            print("[dp_ros] interrupted while stopping: killing the remaining nodes", file=sys.stderr, flush=True)
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if self.domain is not None:
                self.domain.release()
                self.domain = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _graph_priority():
    from dp_ros.core.priority import GRAPH_NICE, raise_priority
    raise_priority(GRAPH_NICE)


def stop_on_signals():
    """SIGINT, SIGTERM and SIGHUP -> one KeyboardInterrupt in the main thread, so one cleanup path
    handles them all. SIGINT explicitly too: a runner started in the background of a script
    inherits it ignored. Later signals, while that cleanup stops the nodes, are only reported: an
    interrupted cleanup would leave nodes running (NodeProcesses.stop is bounded anyway)."""
    interrupted = []

    def handler(signum, _frame):
        if interrupted:
            print(f"[dp_ros] {signal.Signals(signum).name}: already stopping", file=sys.stderr, flush=True)
            return
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if os.name == "posix":
        signal.signal(signal.SIGHUP, handler)
