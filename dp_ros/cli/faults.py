"""`dp-ros faults [--short] [--checkpoint DIR] [--log-dir DIR] [--out FILE]`: does the graph hold
under faults?

Starts the sim deploy graph, injects each fault of dp_ros/runtime/faults.py in turn while the arm
follows the policy, and prints one JSON object with a row per fault: what was injected, the
largest commanded speed, acceleration and rotation speed (per servo tick), the distance outside
the workspace box, time to hold, whether the servo latched and recovered as specified, and what
/diagnostics said. --short runs the rows the test suite runs. Exit status 1 when any row is
unsafe (or could not run), 0 otherwise.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from dp_ros.viz.progress import add_progress_flag, echo, progress_bar


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="only the rows the test suite runs")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model")
    ap.add_argument("--log-dir", default=None, help="node logs (default runs/faults-<time>)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    add_progress_flag(ap)
    return ap


def _table(rows) -> str:
    lines = [f"{'fault':62} {'safe':5} {'hold s':>7} {'latch':5} {'recov':5} {'v m/s':>6} {'a m/s2':>6} {'out m':>5}"]
    for r in rows:
        hold = "-" if r.get("time_to_hold_s") is None else f"{r['time_to_hold_s']:.2f}"
        lines.append(f"{r['fault'][:62]:62} {str(r['safe']):5} {hold:>7} {str(r.get('latched', '')):5} "
                     f"{str(r.get('recovered', '')):5} {r.get('max_speed', 0):6.3f} {r.get('max_acc', 0):6.2f} "
                     f"{r.get('outside_box_m', 0):5.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from dp_ros.graph import default_checkpoint, default_config, deploy_graph, load_params
    from dp_ros.runtime.faults import FAULTS, FaultHarness
    from dp_ros.runtime.processes import NodeProcesses, stop_on_signals

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    log_dir = Path(args.log_dir or f"runs/faults-{time.strftime('%Y%m%d-%H%M%S')}")
    servo = load_params(default_config())["ur5_servo_node"]
    faults = [f for f in FAULTS if f.short or not args.short]
    procs = NodeProcesses(deploy_graph(sim=True, checkpoint=checkpoint, config_file=default_config()),
                          default_config(), log_dir)
    stop_on_signals()
    rows, harness = [], None
    try:
        procs.start()
        harness = FaultHarness(procs, servo)
        if not harness.wait_for(lambda: "policy_node" in harness.log.diagnostics, 180):
            raise RuntimeError("the policy did not come up within 180 s")
        bar = progress_bar(total=len(faults), enabled=not args.no_progress, desc="faults", unit="fault")
        with bar:
            for fault in faults:
                echo(f"[dp-ros faults] {fault.name}", file=sys.stderr)
                try:
                    rows.append(harness.run_row(fault))
                except (RuntimeError, TimeoutError) as exc:
                    rows.append({"fault": fault.name, "safe": False, "error": str(exc)})
                bar.update()
                bar.set_postfix(safe=f"{sum(r['safe'] for r in rows)}/{len(rows)}")
    except KeyboardInterrupt:
        pass
    finally:
        if harness is not None:
            harness.close()
        procs.stop()
    result = {"rows": rows, "all_safe": bool(rows) and len(rows) == len(faults) and all(r["safe"] for r in rows),
              "checkpoint": str(checkpoint), "log_dir": str(log_dir)}
    print(_table(rows), file=sys.stderr)
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if result["all_safe"] else 1


if __name__ == "__main__":
    sys.exit(main())
