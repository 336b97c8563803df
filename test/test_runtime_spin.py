"""A runner's background spin stops without racing the executor, and a finished command's exit
cannot hang: what kept a finished `dp-ros eval` alive until CI's test timeout killed it."""

import subprocess
import sys
import threading

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

from dp_ros.runtime import domain
from dp_ros.runtime.spin import SpinThread


@pytest.fixture
def node():
    claim = domain.claim({})
    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=claim.domain_id)
    n = rclpy.create_node("spin_test", context=context)
    yield n
    n.destroy_node()
    rclpy.shutdown(context=context)
    claim.release()


def test_stop_joins_the_thread_before_the_executor_is_shut_down(node):
    ticks = threading.Semaphore(0)
    node.create_timer(0.01, ticks.release)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    spin = SpinThread(executor, "spin-test")
    for _ in range(5):                       # callbacks run while it spins
        assert ticks.acquire(timeout=5.0)
    assert spin.stop()
    assert not spin.thread.is_alive()
    while ticks.acquire(blocking=False):     # what ran before stop() returned
        pass
    assert not ticks.acquire(timeout=0.2)    # nothing runs after it
    assert executor.get_nodes() == []        # shut down: the nodes were let go


def test_a_callback_still_running_leaves_the_executor_alone_and_says_where(node, capsys):
    entered, release = threading.Event(), threading.Event()

    def busy():
        entered.set()
        release.wait(10.0)
    timer = node.create_timer(0.01, busy)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    spin = SpinThread(executor, "spin-busy")
    assert entered.wait(5.0)
    node.destroy_timer(timer)
    assert not spin.stop(timeout_s=0.3)
    err = capsys.readouterr().err
    assert "spin-busy still busy" in err and "in busy" in err    # the callback's frame is named
    assert executor.get_nodes() == [node]                          # not shut down under the callback
    release.set()
    assert spin.stop()                                             # once it returns, the stop completes
    assert not spin.thread.is_alive()


def test_an_exit_stuck_after_the_command_ends_with_a_stack_dump_not_a_hang():
    # the interpreter's teardown stuck (an atexit handler standing in for a library's native
    # teardown): the watchdog ends the process and says where every thread was
    code = ("import atexit, time, dp_ros.cli as cli\n"
            "cli.EXIT_GRACE_S = 1.0\n"
            "cli.main = lambda: 0\n"
            "def stuck_teardown():\n"
            "    time.sleep(120)\n"
            "atexit.register(stuck_teardown)\n"
            "cli.entry()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Timeout" in result.stderr and "stuck_teardown" in result.stderr


def test_a_command_exits_with_its_own_status_when_nothing_is_stuck():
    result = subprocess.run([sys.executable, "-m", "dp_ros.cli", "no-such-command"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown command 'no-such-command'" in result.stderr
    result = subprocess.run([sys.executable, "-m", "dp_ros.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "deploy" in result.stdout
