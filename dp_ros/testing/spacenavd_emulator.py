"""A spacenavd on an AF_UNIX socket for libspnav: it speaks the original protocol (v0, eight
native ints per event) that libspnav falls back to when its v1 request goes unanswered, and can
be killed and restarted mid-stream like the daemon.

libspnav finds the socket through $SPNAV_SOCKET (then /etc/spnavrc, then /var/run/spnav.sock),
so a test points SPNAV_SOCKET at the emulator's path (keep it short: AF_UNIX paths are limited
to 107 bytes).

    python -m dp_ros.testing.spacenavd_emulator /tmp/spnav.sock   # then SPNAV_SOCKET=/tmp/spnav.sock
"""

import argparse
import os
import socket
import struct
import threading
import time

EVENT = struct.Struct("8i")
MOTION, PRESS, RELEASE = 0, 1, 2   # v0 event codes


class SpacenavdEmulator:
    def __init__(self, path):
        self.path = str(path)
        self._server = None
        self._clients = []
        self._lock = threading.Lock()
        self._thread = None

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(4)
        self._thread = threading.Thread(target=self._accept, args=(self._server,), daemon=True)
        self._thread.start()
        return self

    def _accept(self, server):
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(conn)
            # libspnav's protocol-v1 request is read and left unanswered: it then speaks v0
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn):
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass

    def wait_for_client(self, timeout_s=10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._clients:
                    return True
            time.sleep(0.01)
        return False

    def _send(self, *values):
        data = EVENT.pack(*values)
        with self._lock:
            for conn in list(self._clients):
                try:
                    conn.sendall(data)
                except OSError:
                    self._clients.remove(conn)

    def motion(self, x=0, y=0, z=0, rx=0, ry=0, rz=0, period_ms=16):
        """A motion event in spacenavd's axes (x right, y up, z away from the user; raw units)."""
        self._send(MOTION, int(x), int(y), int(z), int(rx), int(ry), int(rz), int(period_ms))

    def button(self, number, pressed=True):
        self._send(PRESS if pressed else RELEASE, int(number), 0, 0, 0, 0, 0, 0)

    def kill(self):
        """The daemon exits: every connection closes and the socket file goes."""
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
            self._server = None
        with self._lock:
            for conn in self._clients:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._clients = []
        if os.path.exists(self.path):
            os.unlink(self.path)

    close = kill

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="socket path (set SPNAV_SOCKET to it for the client)")
    ap.add_argument("--wiggle", action="store_true", help="send a slow forward/back deflection, 50 Hz")
    args = ap.parse_args(argv)
    with SpacenavdEmulator(args.path) as daemon:
        print(f"spacenavd emulator on {args.path}; SPNAV_SOCKET={args.path}; Ctrl-C to stop", flush=True)
        try:
            t0 = time.monotonic()
            while True:
                if args.wiggle:
                    import math
                    daemon.motion(z=int(200 * math.sin(time.monotonic() - t0)))
                time.sleep(0.02)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
