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


def echo(message: str, file=None) -> None:
    """print() that does not tear a progress bar: the bar is cleared, the line written, the
    bar redrawn. Same file and flush as before (stdout by default)."""
    tqdm.write(message, file=file if file is not None else sys.stdout)
    (file or sys.stdout).flush()
