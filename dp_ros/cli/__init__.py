"""`dp-ros <command>`: one entry point for every tool. Each command lives in its own module and is
imported only when used, so `dp-ros --help` is fast and a missing optional dependency of one tool
never breaks another.

Each command's module has main(argv) -> int; the ones in this package also have parser() (none for
the bench dispatcher). `convert`, `train` and `sanity` live beside their code.
"""

import argparse
import faulthandler
import importlib
import sys

# command -> (module with main(argv), one-line help)
COMMANDS = {
    "deploy": ("dp_ros.cli.deploy", "run the deploy graph (sim or hardware) without launch_ros"),
    "record": ("dp_ros.cli.record", "record teleop demonstrations to rosbag2 (MCAP)"),
    "convert": ("dp_ros.data.convert", "convert recorded bags into a zarr replay buffer"),
    "train": ("dp_ros.train.cli", "train a policy (same as dp-train)"),
    "eval": ("dp_ros.cli.eval", "closed-loop evaluation in simulation through the deploy graph"),
    "bench": ("dp_ros.cli.bench", "benchmarks that print JSON: `dp-ros bench` lists them (inference, servo, pipeline, ...)"),
    "faults": ("dp_ros.cli.faults", "inject faults into the sim deploy graph and print what the servo did: `dp-ros faults [--short]`"),
    "sanity": ("dp_ros.sanity.cli", "the method's sanity checks: `dp-ros sanity lqr|multimodal`"),
    "export": ("dp_ros.cli.export", "a checkpoint made ready to ship (weights only, float16): `dp-ros export SRC models/NAME`"),
    "show": ("dp_ros.cli.show", "one recorded or converted episode as a PNG (and a rerun .rrd): `dp-ros show EPISODE_OR_STORE`"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="dp-ros", description=__doc__.split("\n")[0])
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text, add_help=False)
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}")
        parser.print_help()
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


# What the interpreter's own teardown after a command (DDS participants, encoder and torch threads)
# may take before the process is ended anyway. It normally takes well under a second.
EXIT_GRACE_S = 30.0


def entry() -> None:
    """The `dp-ros` console script (and `python -m dp_ros.cli`): main(), then an exit that cannot
    hang. Once the command has returned and its output is flushed, a native watchdog (faulthandler's
    thread, which runs without the interpreter) waits EXIT_GRACE_S: if the interpreter's teardown
    is stuck in a library's native code by then, it prints every thread's stack to stderr and ends
    the process with status 1, instead of leaving a finished run hanging."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True)
    sys.exit(code)
