"""`dp-ros bench BENCH ...`: measurements that print JSON (no pass/fail).

`dp-ros bench` or `dp-ros bench --help` lists the benches; `dp-ros bench BENCH --help` shows one.
Each bench is a module with main(argv) -> int, imported only when run.
"""

import argparse
import importlib
import sys

# bench -> (module with main(argv), one-line help). Adding a bench is one line here.
BENCHES = {
    "inference": ("dp_ros.policy.bench", "policy network latency, random weights and inputs: --preset paper-real|sim|tiny"),
    "servo": ("dp_ros.cli.bench_servo", "servo loop timing as deployed (own process), optionally beside inference: --rate, --load"),
    "pipeline": ("dp_ros.cli.bench_pipeline", "request -> chunk latency, observation age and stale waypoints in the sim deploy graph"),
    "stitching": ("dp_ros.cli.bench_stitching", "chunk stitching modes against injected inference delay, lockstep: --delays, --modes"),
    "data": ("dp_ros.cli.bench_data", "training batches per second, images read per window vs held in memory: --config FILE"),
    "train": ("dp_ros.cli.bench_train", "training step speed, fp32 vs the precision auto picks (or bf16): --config FILE --steps N"),
}

# dp_ros.policy.bench parses the bench name itself (its parser has `inference` as a subcommand)
_TAKES_ITS_NAME = {"inference"}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="bench", metavar="BENCH")
    for name, (_, help_text) in BENCHES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHES:
        ap = parser()
        if argv and argv[0] not in ("-h", "--help"):
            ap.error(f"unknown bench {argv[0]!r}")          # exits 2, listing the choices in usage
        ap.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(BENCHES[name][0])
    return module.main(argv if name in _TAKES_ITS_NAME else argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
