"""`dp-ros sanity lqr|multimodal`: train a small Diffusion Policy on CPU and check one of the
method's properties. Prints one JSON summary on stdout (progress goes to stderr); exit status 0
only when the property holds."""

import argparse
import json
import sys

CHECKS = ("lqr", "multimodal")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dp-ros sanity", description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=CHECKS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per trained model (default: the check's tuned value)")
    parser.add_argument("--json-out", default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)

    # Imported here so argument errors do not pay for torch's import.
    if args.check == "lqr":
        from dp_ros.sanity import lqr as mod
    else:
        from dp_ros.sanity import multimodal as mod
    result = mod.run(seed=args.seed, steps=args.steps)

    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
