"""The SpaceMouse backend's real ctypes path through Debian's libspnav against the spacenavd
emulator (dp_ros/testing/spacenavd_emulator.py): events, yaw offset, a stale deflection zeroed
after the quiet period, the daemon killed mid-deflection and coming back."""

import ctypes.util
import os
import tempfile
import time

import numpy as np
import pytest

from dp_ros.hardware.spacemouse import SpaceMouseUnavailable, SpaceNavDevice, _load_libspnav
from dp_ros.testing.spacenavd_emulator import SpacenavdEmulator

try:
    _load_libspnav()
except SpaceMouseUnavailable as exc:
    pytest.skip(f"libspnav not installed ({exc}); scripts/setup_env.sh installs libspnav0", allow_module_level=True)

QUIET_S = 0.2
TIMEOUT_S = 10.0   # generous: a loaded 2-core machine


def read_until(dev, condition, timeout_s=TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ev = dev.read(0.05)
        if ev is not None and condition(ev):
            return ev
    raise AssertionError(f"no matching event within {timeout_s} s")


@pytest.fixture
def daemon(monkeypatch):
    d = tempfile.mkdtemp(prefix="spnav", dir="/tmp")   # AF_UNIX paths must stay short
    path = os.path.join(d, "s.sock")
    monkeypatch.setenv("SPNAV_SOCKET", path)
    emulator = SpacenavdEmulator(path).start()
    yield emulator
    emulator.close()
    os.rmdir(d)


@pytest.fixture
def device(daemon):
    dev = SpaceNavDevice(quiet_zero_s=QUIET_S, reconnect_interval_s=0.1, yaw_offset_deg=0.0)
    assert daemon.wait_for_client()
    yield dev
    dev.close()
    assert not SpaceNavDevice._in_use


def test_motion_and_buttons(daemon, device):
    daemon.motion(x=175, y=350, z=-700, ry=35)
    ev = read_until(device, lambda e: e.translation.any())
    np.testing.assert_allclose(ev.translation, [-1.0, -0.5, 1.0])
    np.testing.assert_allclose(ev.rotation, [0.0, 0.0, 0.1])
    daemon.button(1, True)
    assert read_until(device, lambda e: e.buttons[1]).buttons == (False, True)


def test_stale_deflection_is_zeroed_after_the_quiet_period(daemon, device):
    daemon.motion(z=350)
    ev = read_until(device, lambda e: e.translation[0] > 0.9)
    t_last = ev.time_s
    zero = read_until(device, lambda e: not e.translation.any())
    assert zero.time_s - t_last >= QUIET_S - 0.01
    # a device that keeps streaming its deflection is not zeroed
    for _ in range(int(2 * QUIET_S / 0.05)):
        daemon.motion(z=350)
        ev = device.read(0.05)
        if ev is not None:
            assert ev.translation[0] > 0.9


def test_daemon_killed_mid_deflection_returns_to_zero_then_reconnects(daemon, device):
    daemon.motion(x=0, z=350)
    read_until(device, lambda e: e.translation[0] > 0.9)
    daemon.motion(z=350)
    daemon.kill()
    ev = read_until(device, lambda e: not e.translation.any() and not e.rotation.any(), timeout_s=QUIET_S + 2.0)
    assert not ev.translation.any()
    assert not device.connected and device.last_error
    daemon.start()                                   # spacenavd comes back
    read_until(device, lambda e: device.connected)   # reconnected: an all-zero event
    assert daemon.wait_for_client()
    daemon.motion(y=-350)
    assert read_until(device, lambda e: e.translation[2] < -0.9).translation[2] == pytest.approx(-1.0)


def test_yaw_offset_turns_the_device_frame(daemon):
    dev = SpaceNavDevice(yaw_offset_deg=90.0, quiet_zero_s=QUIET_S)
    try:
        assert daemon.wait_for_client()
        daemon.motion(z=350)   # pushed away from the user: device +x
        ev = read_until(dev, lambda e: e.translation.any())
        np.testing.assert_allclose(ev.translation, [0.0, 1.0, 0.0], atol=1e-12)   # robot +y
    finally:
        dev.close()


def test_libspnav_is_the_debian_one():
    assert ctypes.util.find_library("spnav") or os.path.exists("/lib/libspnav.so.0")
