"""Waiting in a test for something another thread or process brings about."""

import time

TIMEOUT_S = 10.0   # generous: a loaded 2-core machine


def wait_for(condition, timeout_s=TIMEOUT_S, what="condition"):
    """condition()'s first truthy value, polled every 10 ms; AssertionError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout_s} s")
