"""Nodes log warnings with `.warning()`, never rclpy's deprecated `.warn()`: `.warn()` goes through
a deprecation wrapper, so rclpy sees every `.warn()` call in a process as one call site, and a
throttled `.warn()` after an unthrottled one raises ValueError in the caller. In ur5_servo_node that
killed the callback thread on hardware (the rtde backend warns at connect, the foreign-publisher
warning is throttled): no more services, e-stop included. Found by a dry run against the emulator."""

import re
from pathlib import Path

import pytest
import rclpy

ROOT = Path(__file__).resolve().parents[1]


def test_rclpy_treats_all_warn_calls_as_one_call_site():
    rclpy.init(args=[])
    try:
        node = rclpy.create_node("warn_call_site_check")
        log = node.get_logger()
        log.warning("no filter")
        log.warning("throttled, another line", throttle_duration_sec=1.0)     # fine
        with pytest.warns(DeprecationWarning):
            log.warn("no filter")
        with pytest.raises(ValueError, match="filters cannot be changed"), pytest.warns(DeprecationWarning):
            log.warn("throttled, another line", throttle_duration_sec=1.0)
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_no_dp_ros_code_uses_the_deprecated_warn():
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "dp_ros").rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.warn\(", line)]
    assert hits == [], "use .warning(): " + ", ".join(hits)
