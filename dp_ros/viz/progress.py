"""Progress bars for the long commands (record, convert, eval, deploy, bench, train).

One rule everywhere: the bar goes to stderr, shows count and rate, and is off with --no-progress
or when stderr is not a terminal (a log file or a test's pipe gets no carriage-return noise).
stdout stays the command's own output (its JSON), untouched."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def add_progress_flag(parser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (also off when stderr is not a terminal)")


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar on stderr; disabled unless `enabled` and stderr is a terminal."""
    on = enabled and sys.stderr.isatty()
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not on, file=sys.stderr, **kwargs)


def wait_with_bar(seconds: float, *, enabled: bool = True, desc: str = "measuring", step_s: float = 0.5) -> None:
    """time.sleep(seconds), with a bar in seconds for a fixed measurement window (no bar: one sleep)."""
    import time
    bar = progress_bar(total=round(seconds, 1), enabled=enabled, desc=desc, unit="s",
                       bar_format="{desc}: {bar} {n:.1f}/{total:.1f} s")
    if bar.disable:
        bar.close()
        time.sleep(seconds)
        return
    end = time.monotonic() + seconds
    with bar:
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(step_s, left))
            bar.n = round(min(seconds, seconds - max(0.0, end - time.monotonic())), 1)
            bar.refresh()


def echo(message: str, file=None) -> None:
    """print() that does not tear a progress bar: the bar is cleared, the line written, the
    bar redrawn. Same file and flush as before (stdout by default)."""
    tqdm.write(message, file=file if file is not None else sys.stdout)
    (file or sys.stdout).flush()
