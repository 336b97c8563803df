"""`dp-ros bench inference|servo|pipeline ...`: measurements that print JSON (no pass/fail).

`inference` (also the default when no bench is named) is dp_ros.policy.bench; `servo` and
`pipeline` are this package's bench_servo and bench_pipeline.
"""

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "servo":
        from dp_ros.cli.bench_servo import main as servo_main
        return servo_main(argv[1:])
    if argv and argv[0] == "pipeline":
        from dp_ros.cli.bench_pipeline import main as pipeline_main
        return pipeline_main(argv[1:])
    from dp_ros.policy.bench import main as inference_main
    return inference_main(argv)
