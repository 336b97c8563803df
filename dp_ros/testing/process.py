"""Run an emulator in a child process and call its methods from the test.

Needed for ur_rtde: its Python bindings keep the interpreter lock while they block on the
socket (the constructors wait for the controller's replies), so an emulator thread in the same
process would never get to answer."""

import multiprocessing
import traceback


def _child(conn, factory, args, kwargs):
    try:
        obj = factory(*args, **kwargs)
        obj.start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", None))
    try:
        while True:
            try:
                name, a, kw = conn.recv()
            except EOFError:
                return
            if name == "__close__":
                conn.send(("ok", None))
                return
            try:
                conn.send(("ok", getattr(obj, name)(*a, **kw)))
            except Exception:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    finally:
        obj.close()


class InChildProcess:
    """`InChildProcess(Factory, *args, **kwargs)`: Factory(*args, **kwargs).start() in a spawned
    process; `proxy.method(...)` calls it there and returns its (picklable) result; close() ends it."""

    def __init__(self, factory, *args, start_timeout_s=30.0, **kwargs):
        ctx = multiprocessing.get_context("spawn")   # no fork of a process that holds ROS / ur_rtde threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, factory, args, kwargs), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(start_timeout_s):
            self._proc.kill()
            raise RuntimeError(f"{factory.__name__} did not start within {start_timeout_s} s")
        try:
            status, detail = self._conn.recv()
        except EOFError:
            status, detail = "error", f"{factory.__name__} process exited with code {self._proc.exitcode}"
        if status != "ok":
            self._proc.join(5.0)
            raise RuntimeError(detail)

    def _call(self, name, *args, **kwargs):
        self._conn.send((name, args, kwargs))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"{name} failed in the emulator process:\n{value}")
        return value

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def close(self):
        if self._proc.is_alive():
            try:
                self._call("__close__")
            except (OSError, EOFError, RuntimeError):
                pass
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5.0)
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
