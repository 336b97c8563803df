"""Inference in a process of its own.

The policy node's executor thread and an inference thread in one interpreter share its lock:
on a 2-core machine the executor's callbacks (100+ state messages/s) held it for tens of ms per
chunk. Here the network runs in a child process that owns its interpreter and CPU threads; the
node sends it an Observation and gets back the timed chunk. The child is started with 'spawn'
(never fork a process that runs DDS threads) and imports no ROS.

Scheduling: the child raises its priority (nice, and its session's autogroup nice, which is what
counts between processes started in sessions of their own) when the OS permits, and when a core
stays free for the rest it asks for SCHED_RR above the streaming nodes: then nothing but the servo
loop preempts a chunk in progress, and the kernel moves the streaming nodes to the other cores.
Measured on 2 cores (`dp-ros bench pipeline`): request->chunk 1.56x predict_action with the
network at nice -15 and the streaming nodes at SCHED_RR 10, 1.11-1.16x with the network at
SCHED_RR 20. Pinning the nodes to one CPU and the network to the other gave 1.1-1.5x: the nodes'
CPU was then saturated. `info["priority"]` says what the child got.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from dp_ros.core.priority import normal_scheduling, raise_priority, realtime


class InferenceError(RuntimeError):
    """The inference process failed to start or died."""


def _serve(conn, checkpoint: str, device: str, threads: int, nice: int, rt_priority: int,
           denoising_steps: int):
    try:
        import torch

        from dp_ros.policy.planner import ChunkPlanner

        normal_scheduling()   # started by the real-time policy node: not its class by default
        priority = raise_priority(nice)
        if rt_priority > 0 and (os.cpu_count() or 1) > threads:
            priority += ", " + realtime("SCHED_RR", rt_priority)
        torch.set_num_threads(threads)   # after: torch's threads inherit the scheduling class
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        planner = ChunkPlanner.from_checkpoint(checkpoint, dev, denoising_steps)
        t = time.perf_counter()
        planner.warm_up()
        conn.send(("ready", {"config": planner.cfg.to_dict(), "robot": planner.robot, "device": str(dev),
                             "threads": threads, "denoising_steps": planner.denoising_steps,
                             "priority": priority, "warm_up_s": time.perf_counter() - t, "pid": os.getpid()}))
    except Exception as exc:  # noqa: BLE001 - report the reason to the node, then exit
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return                       # the node went away (closed, or killed: connection reset)
        if request is None:
            return
        obs, committed = request
        t = time.perf_counter()
        try:
            times, poses = planner.plan(obs, committed=committed)
            conn.send(("ok", times, poses, time.perf_counter() - t, planner.held_m))
        except Exception as exc:  # noqa: BLE001 - a bad observation fails one chunk, not the process
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class InferenceProcess:
    """Parent side: start(), plan(obs, committed=None) -> (times, poses, compute_s, held_m), close();
    held_m: how far the chunk was moved from the sample to keep to the demonstrations' motion."""

    def __init__(self, checkpoint, device: str = "auto", threads: int = 0, nice: int = 0, rt_priority: int = 0,
                 denoising_steps: int = 0):
        """device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... resolved in the child,
        so the node itself never imports torch. threads: torch CPU threads, 0 = cores - 1: one
        core stays for the other nodes (torch's threads on every core collapse as soon as anything
        else runs: measured 8x slower with one busy process beside it). nice, rt_priority: see
        the policy node's `inference_nice` and `inference_realtime_priority`. denoising_steps: DDIM
        steps per chunk, 0 = the checkpoint's."""
        threads = int(threads) or max(1, (os.cpu_count() or 1) - 1)
        self._args = (str(checkpoint), str(device), threads, int(nice), int(rt_priority), int(denoising_steps))
        self._proc = None
        self._conn = None
        self.info: dict = {}

    @classmethod
    def from_params(cls, params: dict, checkpoint=None) -> "InferenceProcess":
        """As the policy node starts it, from its parameters (the `policy_node` section)."""
        return cls(checkpoint or params["checkpoint"], params["device"], int(params["torch_threads"]),
                   int(params["inference_nice"]), int(params["inference_realtime_priority"]),
                   int(params["denoising_steps"]))

    def start(self, timeout_s: float = 300.0) -> dict:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, *self._args), name="dp_ros-inference", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(timeout_s):
            self.close()
            raise InferenceError(f"inference process not ready after {timeout_s:.0f} s")
        status, payload = self._recv()
        if status != "ready":
            self.close()
            raise InferenceError(f"inference process failed to start: {payload}")
        self.info = payload
        return payload

    def _recv(self):
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            raise InferenceError(f"inference process died (exit code {code})") from None
        return msg[0], (msg[1] if len(msg) == 2 else msg[1:])

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def plan(self, obs, committed=None):
        """Blocking; ValueError for a failed chunk, InferenceError if the process is gone.
        committed: a planner.Commitment to inpaint (stitch inpaint), or None."""
        if not self.alive:
            raise InferenceError(f"inference process is not running (exit code {self._proc.exitcode})")
        try:
            self._conn.send((obs, committed))
        except (BrokenPipeError, OSError):
            raise InferenceError("inference process died") from None
        status, payload = self._recv()
        if status == "ok":
            return payload
        raise ValueError(payload)

    def close(self):
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=2.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=2.0)
        self._conn.close()
        self._proc = None
