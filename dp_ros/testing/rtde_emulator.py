"""A UR controller on localhost for ur_rtde: the RTDE server (port 30004), the dashboard server
(29999) and the script ports (30001-30003), with faults to inject.

RTDE follows UR's published protocol (version 2; rtde_protocol.py). Behind it an emulated arm
whose TCP goes where it is servoed, and an emulated ur_rtde control script: it starts when a
script arrives on a script port and answers the register handshake of ur_rtde's
RTDEControlInterface (output_int_register_0: 1 = ready for a command, 2 = done with it).

ur_rtde's ports are fixed (RTDEReceiveInterface takes no port), so an emulator owns a host
address instead: any 127.x.y.z reaches this machine on Linux, and `free_loopback_host()` finds
one whose ports are free, so parallel runs never meet.

    python -m dp_ros.testing.rtde_emulator --host 127.0.0.2     # then robot_host: 127.0.0.2
"""

import argparse
import random
import socket
import struct
import threading
import time

from dp_ros.hardware import ur_status as st
from dp_ros.testing import rtde_protocol as rp
from dp_ros.testing.ur_dashboard import DashboardServer

RTDE_PORT = 30004
SCRIPT_PORTS = (30001, 30002, 30003)
DASHBOARD_PORT = 29999

# ur_rtde's control-script handshake on output_int_register_0
SCRIPT_READY, SCRIPT_DONE = 1, 2


def free_loopback_host(ports=(RTDE_PORT, DASHBOARD_PORT) + SCRIPT_PORTS, tries=200) -> str:
    """A 127.x.y.z address on which all `ports` can be bound right now."""
    rng = random.Random()
    for _ in range(tries):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(2, 254)}"
        socks = []
        try:
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
            return host
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no loopback address with ports {ports} free")


def listen(host, port) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as exc:
        s.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port} ({exc.strerror}): another emulator or "
                                 f"controller there? Pick another --host (any 127.x.y.z)") from None
    s.listen(8)
    return s


class Arm:
    """The emulated controller's state. All access under `lock`."""

    def __init__(self):
        self.lock = threading.RLock()
        self.t0 = time.monotonic()
        self.frozen_at = None        # controller clock value while frozen
        self.tcp_pose = [0.5, 0.0, 0.2, 3.14159, 0.0, 0.0]   # UR [x y z rx ry rz], tool down
        self.q = [0.0, -1.57, 1.57, -1.57, -1.57, 0.0]
        self.safety_mode = st.SAFETY_NORMAL
        self.safety_status_bits = 1 << st.BIT_NORMAL_MODE
        self.robot_mode = st.ROBOT_MODE_RUNNING
        self.program_running = False
        self.runtime_state = st.RUNTIME_STOPPED
        self.inputs = {}             # input register name -> value
        self.outputs = {}            # output register name -> value
        self.commands = []           # (time, cmd type, {register: value}) the script received
        self.tcp_offset = [0.0] * 6
        self.payload = 0.0

    def timestamp(self):
        return self.frozen_at if self.frozen_at is not None else time.monotonic() - self.t0

    def robot_status_bits(self):
        power = self.robot_mode >= 4
        return (power << st.BIT_POWER_ON) | (self.program_running << st.BIT_PROGRAM_RUNNING)

    def value(self, name):
        """The current value of an RTDE output variable (registers and unknown typed names: 0)."""
        v = {
            "timestamp": self.timestamp(), "actual_TCP_pose": self.tcp_pose, "target_TCP_pose": self.tcp_pose,
            "actual_q": self.q, "target_q": self.q, "safety_mode": self.safety_mode,
            "safety_status_bits": self.safety_status_bits, "robot_mode": self.robot_mode,
            "robot_status_bits": self.robot_status_bits(), "runtime_state": self.runtime_state,
            "speed_scaling": 1.0, "target_speed_fraction": 1.0, "payload": self.payload, "tcp_offset": self.tcp_offset,
            "joint_mode": [253] * 6,   # JOINT_RUNNING_MODE
        }.get(name)
        if v is not None:
            return v
        if name in self.outputs:
            return self.outputs[name]
        if name in self.inputs:
            return self.inputs[name]
        kind = rp.output_type(name)
        code = rp.TYPE_FORMAT[kind]
        return [0] * int(code[:-1]) if len(code) > 1 else 0


class ControlScript:
    """What ur_rtde's rtde_control.script does with the registers, as far as the client can tell:
    a command type in input_int_register_0, its arguments in the registers after it, and the
    ready/done handshake on output_int_register_0. Continuous commands (servo/speed/watchdog) are
    acknowledged by staying ready; the others by 'done' until the client clears the command."""

    # ur_rtde 1.6's RTDE::RobotCommand::Type numbers of the commands this emulator acts on
    NO_CMD, FORCE_MODE, SPEEDJ, SPEEDL, SERVOJ, SERVOC = 0, 6, 9, 10, 11, 12
    SERVO_STOP, SET_PAYLOAD, SERVOL, SET_TCP, SET_WATCHDOG, STOP_SCRIPT = 16, 17, 24, 29, 35, 255
    CONTINUOUS = {FORCE_MODE, SPEEDJ, SPEEDL, SERVOJ, SERVOC, SERVOL}   # ur_rtde does not wait for these

    def __init__(self, arm: Arm, register_offset=0):
        self.arm = arm
        self.off = register_offset
        self.watchdog_period = None   # set by setWatchdog: the program stops when no command comes in time
        self.watchdog_deadline = None

    def _in_int(self, i):
        return int(self.arm.inputs.get(f"input_int_register_{self.off + i}", 0))

    def _in_double(self, i):
        return float(self.arm.inputs.get(f"input_double_register_{self.off + i}", 0.0))

    def _status(self, value):
        self.arm.outputs[f"output_int_register_{self.off}"] = value

    def start(self):
        a = self.arm
        if st.safety_fault(a.safety_mode, a.safety_status_bits) or a.robot_mode != st.ROBOT_MODE_RUNNING:
            return   # the controller refuses to play a program while stopped
        a.program_running, a.runtime_state = True, st.RUNTIME_PLAYING
        self._status(SCRIPT_READY)

    def stop(self):
        a = self.arm
        a.program_running, a.runtime_state = False, st.RUNTIME_STOPPED
        self._status(0)
        self.watchdog_period = self.watchdog_deadline = None

    def step(self, names):
        """Input registers `names` were just written by a client."""
        a = self.arm
        if not a.program_running or f"input_int_register_{self.off}" not in names:
            return
        cmd = self._in_int(0)
        if self.watchdog_period is not None:   # like rtde_set_watchdog on input_int_register_0
            self.watchdog_deadline = time.monotonic() + self.watchdog_period
        if cmd == self.NO_CMD:   # also kickWatchdog's package
            self._status(SCRIPT_READY)
            return
        args = [self._in_double(i) for i in range(6)]
        a.commands.append((time.monotonic(), cmd, {n: a.inputs[n] for n in names}))
        if cmd in (self.SERVOL, self.SERVOC):
            a.tcp_pose = args
        elif cmd == self.SERVOJ:
            a.q = args
        elif cmd == self.SET_TCP:
            a.tcp_offset = args
        elif cmd == self.SET_PAYLOAD:
            a.payload = args[0]
        elif cmd == self.SET_WATCHDOG and args[0] > 0:
            self.watchdog_period = 1.0 / args[0]
            self.watchdog_deadline = time.monotonic() + self.watchdog_period
        elif cmd == self.STOP_SCRIPT:
            self.stop()
            return
        self._status(SCRIPT_READY if cmd in self.CONTINUOUS else SCRIPT_DONE)

    def tick(self):
        """Called at the controller rate: the script's watchdog."""
        if self.watchdog_deadline is not None and time.monotonic() > self.watchdog_deadline:
            self.arm.commands.append((time.monotonic(), "watchdog expired", {}))
            self.stop()


class _RTDEClient:
    """One RTDE connection: recipes, the synchronisation state, its share of the input registers."""

    def __init__(self, sock, addr):
        self.sock, self.addr = sock, addr
        self.buffer = b""
        self.outputs = None          # (names, types, frequency)
        self.inputs = {}             # recipe id -> (names, types)
        self.started = False
        self.next_send = 0.0
        self.recipe_id = 0


class URControllerEmulator:
    """Start with `with URControllerEmulator(host) as robot:` (or start()/close()); point ur_rtde
    at robot.host. Faults: protective_stop(), emergency_stop(), stop_program(), clear_faults(),
    freeze_clock(), stall_stream(), drop_connections(); the arm: set_tcp_pose(), arm.commands."""

    def __init__(self, host="127.0.0.1", controller_version=(5, 11, 1, 108318), remote_control=True,
                 rtde_port=RTDE_PORT, dashboard_port=DASHBOARD_PORT, script_ports=SCRIPT_PORTS, rate_hz=500.0):
        self.host = host
        self.controller_version = tuple(controller_version)
        self.rtde_port, self.dashboard_port, self.script_ports = rtde_port, dashboard_port, tuple(script_ports)
        self.rate_hz = float(rate_hz)    # the controller's own rate: the highest output frequency
        self.arm = Arm()
        self.script = ControlScript(self.arm)
        self.dashboard = DashboardServer(self, remote_control=remote_control)
        self.stalled = False
        self.scripts_received = 0   # control scripts uploaded: a test sees a recovery re-upload it
        self._clients = []
        self._listeners = []
        self._threads = []
        self._running = False

    # --- life cycle
    def start(self):
        self._running = True
        servers = [(self.rtde_port, self._serve_rtde)] + [(p, self._serve_script) for p in self.script_ports]
        servers.append((self.dashboard_port, self.dashboard.serve))
        try:
            for port, handler in servers:
                self._listeners.append((listen(self.host, port), handler))
        except OSError:
            self.close()
            raise
        for sock, handler in self._listeners:
            self._spawn(self._accept_loop, sock, handler)
        self._spawn(self._tick_loop)
        return self

    def close(self):
        self._running = False
        for sock, _ in self._listeners:
            _shutdown(sock)   # wakes the thread blocked in accept(); close() alone does not
            _close(sock)
        self._listeners = []
        self.drop_connections()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"ur-emulator-{fn.__name__}")
        self._threads.append(t)
        t.start()

    def _accept_loop(self, listener, handler):
        while self._running:
            try:
                conn, addr = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._clients.append(conn)
            self._spawn(self._guard, handler, conn, addr)

    def _guard(self, handler, conn, addr):
        try:
            handler(conn, addr)
        except (OSError, ValueError, struct.error):
            pass   # the client went away or spoke nonsense: drop it, as the controller does
        finally:
            _close(conn)
            if conn in self._clients:
                self._clients.remove(conn)

    def _tick_loop(self):
        while self._running:
            with self.arm.lock:
                self.script.tick()
            time.sleep(0.01)

    # --- faults and state, as an operator or the safety system would change them
    def protective_stop(self):
        with self.arm.lock:
            a = self.arm
            a.safety_mode = st.SAFETY_PROTECTIVE_STOP
            a.safety_status_bits = (1 << st.BIT_PROTECTIVE_STOPPED) | (1 << st.BIT_STOPPED_DUE_TO_SAFETY)
            self.script.stop()

    def emergency_stop(self):
        with self.arm.lock:
            a = self.arm
            a.safety_mode = st.SAFETY_ROBOT_ESTOP
            a.safety_status_bits = ((1 << st.BIT_ROBOT_ESTOPPED) | (1 << st.BIT_EMERGENCY_STOPPED)
                                    | (1 << st.BIT_STOPPED_DUE_TO_SAFETY))
            self.script.stop()

    def clear_faults(self):
        """The operator releases the stop on the pendant (the program stays stopped)."""
        with self.arm.lock:
            self.arm.safety_mode = st.SAFETY_NORMAL
            self.arm.safety_status_bits = 1 << st.BIT_NORMAL_MODE
            self.arm.robot_mode = st.ROBOT_MODE_RUNNING

    def stop_program(self):
        with self.arm.lock:
            self.script.stop()

    def freeze_clock(self, frozen=True):
        """Keep sending data packages, all with the same controller timestamp; freeze_clock(False)
        lets it run on from that value."""
        with self.arm.lock:
            if not frozen and self.arm.frozen_at is not None:
                # resume from the value it stood at (t0 moved while still frozen: clearing
                # frozen_at first made this a no-op, and the clock jumped by the freeze's length)
                self.arm.t0 = time.monotonic() - self.arm.frozen_at
            self.arm.frozen_at = self.arm.timestamp() if frozen else None

    def stall_stream(self, stalled=True):
        """Stop sending data packages but keep the connections open (a hung controller)."""
        self.stalled = stalled

    def drop_connections(self):
        """Close every client connection, as a controller reboot or a pulled cable would."""
        for conn in list(self._clients):
            _shutdown(conn)
            _close(conn)

    def set_tcp_pose(self, ur_pose):
        with self.arm.lock:
            self.arm.tcp_pose = [float(v) for v in ur_pose]

    def program_running(self):
        with self.arm.lock:
            return self.arm.program_running

    def snapshot(self) -> dict:
        """What a test may want to check, as plain data (picklable across processes)."""
        with self.arm.lock:
            a = self.arm
            return {"host": self.host, "tcp_pose": list(a.tcp_pose), "tcp_offset": list(a.tcp_offset), "payload": a.payload,
                    "program_running": a.program_running, "safety_mode": a.safety_mode,
                    "commands": [(t, c) for t, c, _ in a.commands], "dashboard": list(self.dashboard.commands),
                    "clients": len(self._clients), "scripts_received": self.scripts_received,
                    "timestamp": a.timestamp()}   # the controller clock, as RTDE's `timestamp` sends it

    # --- script ports: a program text starts the emulated control script
    def _serve_script(self, conn, addr):
        text = b""
        while self._running:
            chunk = conn.recv(65536)
            if not chunk:
                return
            text += chunk
            if b"def " in text and text.rstrip().endswith(b"end"):
                with self.arm.lock:
                    self.scripts_received += 1
                    self.script.start()
                text = b""

    # --- RTDE
    def _serve_rtde(self, conn, addr):
        import select

        client = _RTDEClient(conn, addr)
        try:
            while self._running:
                now = time.monotonic()
                timeout = max(0.0, client.next_send - now) if client.started else 0.2
                readable, _, _ = select.select([conn], [], [], timeout)
                if readable:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    client.buffer += chunk
                    while len(client.buffer) >= rp.HEADER.size:
                        size, kind = rp.HEADER.unpack_from(client.buffer)
                        if size < rp.HEADER.size or len(client.buffer) < size:
                            break
                        payload, client.buffer = client.buffer[rp.HEADER.size:size], client.buffer[size:]
                        self._handle(client, kind, payload)
                if client.started and client.outputs and not self.stalled and time.monotonic() >= client.next_send:
                    conn.sendall(self._data_package(client))
                    period = 1.0 / client.outputs[2]
                    client.next_send = max(client.next_send + period, time.monotonic() - period)
        finally:
            self._release_inputs(client)

    def _handle(self, client, kind, payload):
        send = client.sock.sendall
        if kind == rp.REQUEST_PROTOCOL_VERSION:
            (version,) = struct.unpack(">H", payload[:2])
            send(rp.pack(kind, struct.pack(">B", int(version == 2))))
        elif kind == rp.GET_URCONTROL_VERSION:
            send(rp.pack(kind, struct.pack(">4I", *self.controller_version)))
        elif kind == rp.SETUP_OUTPUTS:
            (frequency,) = struct.unpack(">d", payload[:8])
            names = _names(payload[8:])
            types = [rp.output_type(n) or "NOT_FOUND" for n in names]
            ok = "NOT_FOUND" not in types and 0 < frequency <= self.rate_hz
            if ok:
                client.outputs = (names, types, frequency)
            send(rp.pack(kind, struct.pack(">B", 1 if ok else 0) + ",".join(types).encode()))
        elif kind == rp.SETUP_INPUTS:
            names = _names(payload)
            types = self._claim_inputs(client, names)
            ok = not any(t in ("NOT_FOUND", "IN_USE") for t in types)
            recipe = 0
            if ok:
                client.recipe_id += 1
                recipe = client.recipe_id
                client.inputs[recipe] = (names, types)
            send(rp.pack(kind, struct.pack(">B", recipe) + ",".join(types).encode()))
        elif kind == rp.START:
            client.started, client.next_send = True, time.monotonic()
            send(rp.pack(kind, b"\x01"))
        elif kind == rp.PAUSE:
            client.started = False
            send(rp.pack(kind, b"\x01"))
        elif kind == rp.DATA_PACKAGE:
            recipe = payload[0]
            if recipe in client.inputs:
                names, types = client.inputs[recipe]
                values = rp.unflatten(types, rp.recipe_struct(types).unpack(payload[1:]))
                with self.arm.lock:
                    self.arm.inputs.update(zip(names, values))
                    self.script.step(set(names))

    def _claim_inputs(self, client, names):
        """RTDE input types; IN_USE where another client already writes that input."""
        owner = getattr(self, "_input_owner", None)
        if owner is None:
            owner = self._input_owner = {}
        types = []
        for n in names:
            t = rp.input_type(n)
            if t is None:
                types.append("NOT_FOUND")
            elif owner.get(n, client) is not client:
                types.append("IN_USE")
            else:
                types.append(t)
        if "NOT_FOUND" not in types and "IN_USE" not in types:
            for n in names:
                owner[n] = client
        return types

    def _release_inputs(self, client):
        owner = getattr(self, "_input_owner", {})
        for n in [n for n, c in owner.items() if c is client]:
            del owner[n]

    def _data_package(self, client):
        names, types, _ = client.outputs
        with self.arm.lock:
            values = [self.arm.value(n) for n in names]
        return rp.pack(rp.DATA_PACKAGE, bytes([0]) + rp.recipe_struct(types).pack(*rp.flatten(values)))


def _names(payload: bytes):
    return [n for n in payload.decode("ascii", "replace").split(",") if n]


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(sock):
    try:
        sock.close()
    except OSError:
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (any 127.x.y.z; default %(default)s)")
    ap.add_argument("--cb3", action="store_true", help="report a CB3 controller (3.15, 125 Hz) instead of e-Series")
    ap.add_argument("--no-remote-control", action="store_true", help="dashboard says the robot is in local control")
    args = ap.parse_args(argv)
    version = (3, 15, 7, 0) if args.cb3 else (5, 11, 1, 108318)
    with URControllerEmulator(args.host, controller_version=version, remote_control=not args.no_remote_control,
                              rate_hz=125.0 if args.cb3 else 500.0) as robot:
        print(f"UR controller emulator on {robot.host} (RTDE {robot.rtde_port}, dashboard {robot.dashboard_port}, "
              f"script {', '.join(map(str, robot.script_ports))}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
