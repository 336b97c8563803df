import os
import socket
import struct
import tempfile
import threading

import numpy as np
import pytest

from dp_ros.hardware.spacemouse import (
    DEFAULT_SOCKET,
    ScriptedSpaceMouse,
    SpaceMouseEvent,
    SpaceMouseUnavailable,
    SpaceNavDevice,
)


def test_no_daemon_gives_clear_error(monkeypatch, tmp_path):
    if os.path.exists(DEFAULT_SOCKET) or os.path.exists("/etc/spnavrc"):
        pytest.skip("a spacenavd socket/config exists on this machine")
    monkeypatch.setenv("SPNAV_SOCKET", str(tmp_path / "missing.sock"))
    with pytest.raises(SpaceMouseUnavailable, match="spacenavd"):
        SpaceNavDevice()
    assert not SpaceNavDevice._in_use


def test_events_from_a_protocol_v0_daemon(monkeypatch):
    """A stand-in spacenavd speaking the original wire protocol (8 int32 per event) checks the
    ctypes event layout, axis mapping, scaling, buttons and end-of-connection handling."""
    d = tempfile.mkdtemp(prefix="spnav", dir="/tmp")  # AF_UNIX paths must stay short
    path = os.path.join(d, "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    conns = []
    t = threading.Thread(target=lambda: conns.append(srv.accept()[0]), daemon=True)
    t.start()
    monkeypatch.setenv("SPNAV_SOCKET", path)
    dev = SpaceNavDevice()  # waits ~300 ms for a v1 reply, then uses v0
    try:
        t.join(2.0)
        conn = conns[0]
        assert dev.read(0.05) is None
        conn.sendall(struct.pack("8i", 0, 175, 350, -700, 0, 35, 0, 16))  # motion
        ev = dev.read(1.0)
        assert isinstance(ev, SpaceMouseEvent)
        # spacenavd (x right, y up, z away) -> ROS (x forward, y left, z up), /350, clipped.
        np.testing.assert_allclose(ev.translation, [-1.0, -0.5, 1.0])
        np.testing.assert_allclose(ev.rotation, [0.0, 0.0, 0.1])
        assert ev.buttons == (False, False)
        conn.sendall(struct.pack("8i", 1, 1, 0, 0, 0, 0, 0, 0))  # press button 1
        assert dev.read(1.0).buttons == (False, True)
        conn.sendall(struct.pack("8i", 2, 1, 0, 0, 0, 0, 0, 0))  # release
        assert dev.read(1.0).buttons == (False, False)
        conn.close()
        ev = dev.read(1.0)   # the daemon went: one all-zero event, then reconnect attempts
        assert not dev.connected and "closed" in dev.last_error
        assert not ev.translation.any() and not ev.rotation.any()
    finally:
        dev.close()
        srv.close()
        os.unlink(path)
        os.rmdir(d)
    assert not SpaceNavDevice._in_use


def test_scripted_spacemouse():
    def policy(t):
        return ([0.5, 0.0, 2.0], [0.0, 0.1, 0.0], (t > 0.05, False))

    sm = ScriptedSpaceMouse(policy, rate_hz=50)
    evs = [sm.read(1.0) for _ in range(6)]
    assert all(isinstance(e, SpaceMouseEvent) for e in evs)
    np.testing.assert_allclose(evs[0].translation, [0.5, 0.0, 1.0])  # clipped to [-1, 1]
    assert evs[0].buttons == (False, False) and evs[-1].buttons[0]
    # Paced at 50 Hz, never bursting: event k comes no earlier than k periods after the first
    # (a late wake-up shortens the next interval, so single intervals are not asserted).
    since_first = np.array([e.time_s for e in evs]) - evs[0].time_s
    assert np.all(since_first >= 0.02 * np.arange(6) - 0.002), since_first
    assert sm.read(0.0) is None        # the next tick is ~20 ms away: a zero timeout does not wait for it
    assert sm.read(1.0) is not None    # ... and did not consume it
    sm.close()
    with pytest.raises(RuntimeError):
        sm.read(0.1)


def test_scripted_spacemouse_none_and_event_passthrough():
    e = SpaceMouseEvent(np.zeros(3), np.ones(3), (True,))
    assert ScriptedSpaceMouse(lambda t: e).read(0.1) is e
    assert ScriptedSpaceMouse(lambda t: None).read(0.1) is None
