"""3Dconnexion SpaceMouse through spacenavd (Debian's libspnav0 via ctypes) and a scripted stand-in.

Axes follow the ROS spacenav driver (spacenav_node), so teleop behaves the same with either:
translation (x forward/away from the user, y left, z up) and rotation about those axes, each
raw spacenavd value divided by `full_scale` (spacenavd reports about +-350), turned by
`yaw_offset_deg` about the vertical for a rig set up another way round, and clipped to [-1, 1].
"""

import ctypes
import ctypes.util
import os
import select
import socket
import time
from typing import Callable, Optional

import numpy as np

from .base import SpaceMouseBackend, SpaceMouseEvent

SPNAV_EVENT_MOTION = 1
SPNAV_EVENT_BUTTON = 2
DEFAULT_SOCKET = "/var/run/spnav.sock"


class _Motion(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("x", ctypes.c_int), ("y", ctypes.c_int), ("z", ctypes.c_int),
                ("rx", ctypes.c_int), ("ry", ctypes.c_int), ("rz", ctypes.c_int),
                ("period", ctypes.c_uint), ("data", ctypes.POINTER(ctypes.c_int))]


class _Button(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("press", ctypes.c_int), ("bnum", ctypes.c_int)]


class _Event(ctypes.Union):
    # libspnav 1.0 adds dev/cfg/axis members; the padding covers them (and any growth).
    _fields_ = [("type", ctypes.c_int), ("motion", _Motion), ("button", _Button), ("_pad", ctypes.c_char * 128)]


class SpaceMouseUnavailable(RuntimeError):
    """libspnav missing or spacenavd not reachable."""


def _load_libspnav():
    for name in (ctypes.util.find_library("spnav"), "libspnav.so.0", "libspnav.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.spnav_open.restype = ctypes.c_int
        lib.spnav_close.restype = ctypes.c_int
        lib.spnav_fd.restype = ctypes.c_int
        lib.spnav_poll_event.argtypes = [ctypes.POINTER(_Event)]
        lib.spnav_poll_event.restype = ctypes.c_int
        lib.spnav_wait_event.argtypes = [ctypes.POINTER(_Event)]
        lib.spnav_wait_event.restype = ctypes.c_int
        return lib
    raise SpaceMouseUnavailable("libspnav not found: install Debian's libspnav0 (apt-get install libspnav0)")


def _to_ros_axes(x, y, z):
    # spacenavd: x right, y up, z away from the user -> ROS: x forward, y left, z up.
    return np.array([z, -x, y], dtype=float)


def yaw_rotation(yaw_deg: float) -> np.ndarray:
    """Rotation about the vertical axis: the device's frame -> the robot's, for a rig where the
    SpaceMouse does not face the robot's x axis."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class SpaceNavDevice(SpaceMouseBackend):
    """The SpaceMouse via spacenavd. Raises SpaceMouseUnavailable when spacenavd is not running
    at construction.

    read() drains queued events: motion events are coalesced into the newest (the device streams
    them continuously while deflected), a button press/release is returned as soon as it is seen.
    Like the ROS spacenav driver, a deflection with no motion event for quiet_zero_s is stale
    (a lost event, a hung daemon) and read() returns it zeroed. When spacenavd goes away, read()
    returns one all-zero event (so the last deflection is never kept), then None while it
    reconnects every reconnect_interval_s; `connected` and `last_error` say where it stands.
    """

    _in_use = False  # libspnav keeps one connection per process

    def __init__(self, full_scale=350.0, deadzone=0.0, n_buttons=2, socket_path=None, yaw_offset_deg=0.0,
                 quiet_zero_s=0.25, reconnect_interval_s=1.0):
        self.full_scale = float(full_scale)
        self.deadzone = float(deadzone)
        self.yaw = yaw_rotation(yaw_offset_deg)
        self.quiet_zero_s = float(quiet_zero_s)
        self.reconnect_interval_s = float(reconnect_interval_s)
        self._n_buttons = int(n_buttons)
        self._open = False
        self.connected = False
        self.last_error = None
        self._lib = _load_libspnav()
        if SpaceNavDevice._in_use:
            raise SpaceMouseUnavailable("a SpaceNavDevice is already open in this process (libspnav allows one)")
        # libspnav tries $SPNAV_SOCKET, then `socket =` in /etc/spnavrc, then /var/run/spnav.sock.
        if socket_path is not None:
            os.environ["SPNAV_SOCKET"] = str(socket_path)
        self.path = os.environ.get("SPNAV_SOCKET", DEFAULT_SOCKET)
        self._zero_state()
        if not self._connect():
            raise SpaceMouseUnavailable(
                f"cannot connect to spacenavd (socket {self.path}): is the daemon running? "
                "Start it with `sudo systemctl start spacenavd` (Debian package spacenavd)."
            )
        SpaceNavDevice._in_use = True
        self._open = True

    def _zero_state(self):
        self._trans = np.zeros(3)
        self._rot = np.zeros(3)
        self._buttons = [False] * self._n_buttons
        self._last_motion = time.monotonic()

    def _connect(self) -> bool:
        # spnav_open waits up to 300 ms for a protocol-v1 reply, then falls back to v0.
        self._next_try = time.monotonic() + self.reconnect_interval_s
        if self._lib.spnav_open() == -1:
            return False
        self._fd = self._lib.spnav_fd()
        self.connected, self.last_error = True, None
        self._last_motion = time.monotonic()
        return True

    def _lost(self, reason):
        self._lib.spnav_close()
        self.connected, self.last_error = False, reason
        self._next_try = time.monotonic() + self.reconnect_interval_s
        self._zero_state()
        return self._event()

    def _scale(self, v):
        v = np.clip(self.yaw @ (v / self.full_scale), -1.0, 1.0)
        v[np.abs(v) < self.deadzone] = 0.0
        return v

    def _event(self):
        return SpaceMouseEvent(translation=self._trans.copy(), rotation=self._rot.copy(),
                               buttons=tuple(self._buttons), time_s=time.monotonic())

    def _deflected(self):
        return bool(np.any(self._trans) or np.any(self._rot))

    def read(self, timeout_s: float) -> Optional[SpaceMouseEvent]:
        if not self._open:
            raise RuntimeError("SpaceNavDevice is closed")
        deadline = time.monotonic() + max(0.0, timeout_s)
        if not self.connected:
            if time.monotonic() >= self._next_try and self._connect():
                return self._event()   # all zero: the state was cleared when the daemon went
            time.sleep(max(0.0, min(deadline, self._next_try) - time.monotonic()))
            return None
        ev = _Event()
        readable = False
        while True:
            got_motion = got_any = False
            while self._lib.spnav_poll_event(ctypes.byref(ev)) != 0:
                got_any = True
                if ev.type == SPNAV_EVENT_MOTION:
                    m = ev.motion
                    self._trans = self._scale(_to_ros_axes(m.x, m.y, m.z))
                    self._rot = self._scale(_to_ros_axes(m.rx, m.ry, m.rz))
                    self._last_motion = time.monotonic()
                    got_motion = True
                elif ev.type == SPNAV_EVENT_BUTTON:
                    b = ev.button
                    if b.bnum >= len(self._buttons):
                        self._buttons.extend([False] * (b.bnum + 1 - len(self._buttons)))
                    self._buttons[b.bnum] = bool(b.press)
                    return self._event()
            if got_motion:
                return self._event()
            if readable and not got_any and self._peer_closed():
                return self._lost("spacenavd closed the connection")
            now = time.monotonic()
            if self._deflected() and now - self._last_motion > self.quiet_zero_s:
                self._trans, self._rot = np.zeros(3), np.zeros(3)
                return self._event()   # stale deflection: zero, as the ROS spacenav driver does
            readable = False
            wake = min(deadline, self._last_motion + self.quiet_zero_s) if self._deflected() else deadline
            remaining = wake - now
            if remaining <= 0 and now >= deadline:
                return None
            r, _, _ = select.select([self._fd], [], [], max(0.0, remaining))
            readable = bool(r)
            if not r and time.monotonic() >= deadline and not self._deflected():
                return None

    def _peer_closed(self):
        # Readable yet no event: either junk libspnav skipped or end of file; peek to tell.
        with socket.socket(fileno=os.dup(self._fd)) as sock:
            try:
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

    def close(self):
        if self._open:
            if self.connected:
                self._lib.spnav_close()
            self._open = self.connected = False
            SpaceNavDevice._in_use = False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class ScriptedSpaceMouse(SpaceMouseBackend):
    """Events from a callable, for scripted experts and tests.

    policy_fn(t_s) gets the seconds since the first read and returns a SpaceMouseEvent, a tuple
    (translation, rotation) or (translation, rotation, buttons), or None for "no event".
    With rate_hz set, read() paces events like a device streaming at that rate (waiting at most
    timeout_s); without it, read() returns immediately.
    """

    def __init__(self, policy_fn: Callable, rate_hz: Optional[float] = None, n_buttons=2):
        self.policy_fn = policy_fn
        self.period_s = None if not rate_hz else 1.0 / float(rate_hz)
        self.n_buttons = int(n_buttons)
        self._t0 = None
        self._next_s = None
        self._closed = False

    def read(self, timeout_s: float) -> Optional[SpaceMouseEvent]:
        if self._closed:
            raise RuntimeError("ScriptedSpaceMouse is closed")
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = self._next_s = now
        if self.period_s is not None:
            wait = self._next_s - now
            if wait > timeout_s:
                time.sleep(max(0.0, timeout_s))
                return None
            if wait > 0:
                time.sleep(wait)
            # Skip missed ticks rather than bursting to catch up.
            self._next_s = max(self._next_s + self.period_s, time.monotonic())
        out = self.policy_fn(time.monotonic() - self._t0)
        if out is None:
            return None
        if isinstance(out, SpaceMouseEvent):
            return out
        trans, rot = np.asarray(out[0], dtype=float).reshape(3), np.asarray(out[1], dtype=float).reshape(3)
        buttons = tuple(bool(b) for b in out[2]) if len(out) > 2 else (False,) * self.n_buttons
        return SpaceMouseEvent(translation=np.clip(trans, -1, 1), rotation=np.clip(rot, -1, 1),
                               buttons=buttons, time_s=time.monotonic())

    def close(self):
        self._closed = True
