"""`dp-ros show`: look at one recorded or converted episode.

    dp-ros show EPISODE_BAG [--out PNG] [--rerun FILE.rrd] [--frequency HZ]
    dp-ros show STORE.zarr --episode N [--out PNG] [--rerun FILE.rrd]

The PNG: a strip of camera frames, the TCP position and the action over time, the conversion's
control-step grid marked (for a bag: the grid `dp-ros convert` would use, with the per-step values
it would store). --rerun writes the same episode for the rerun viewer (`rerun FILE.rrd`); it
needs rerun-sdk (in requirements.txt). A bag also opens directly in Foxglove (MCAP).
Prints JSON with what was written.
"""

import argparse
import json
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros show", description=__doc__.split("\n")[0])
    ap.add_argument("path", metavar="EPISODE_OR_STORE", help="an episode bag directory or a zarr store")
    ap.add_argument("--episode", type=int, default=0, help="episode index in a store (default 0)")
    ap.add_argument("--out", default=None, help="PNG to write (default: <name>.png in the current directory)")
    ap.add_argument("--rerun", default=None, metavar="FILE.rrd", help="also write a rerun recording")
    ap.add_argument("--frequency", type=float, default=None,
                    help="bag: control frequency of the step grid (default: the converter's, 10 Hz)")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from dp_ros.data.bag_reader import BadBag
    from dp_ros.viz.episode_plot import episode_figure
    from dp_ros.viz.episode_view import is_store, load_episode
    from dp_ros.viz.rerun_export import MissingRerun, write_rrd

    src = Path(args.path)
    try:
        view = load_episode(src, args.episode, args.frequency)
    except (BadBag, IndexError, OSError, ValueError) as exc:
        print(f"dp-ros show: {exc}", file=sys.stderr)
        return 2
    default = f"{src.stem}_ep{args.episode}.png" if is_store(src) else f"{src.name}.png"
    result = {"source": str(src), "kind": view.kind, "steps": None if view.grid is None else len(view.grid),
              "png": episode_figure(view, args.out or default)}
    if view.note:
        result["note"] = view.note
    if args.rerun:
        try:
            result["rerun"] = write_rrd(view, args.rerun)
        except MissingRerun as exc:
            print(f"dp-ros show: {exc}", file=sys.stderr)
            print(json.dumps(result, indent=2))
            return 3
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
