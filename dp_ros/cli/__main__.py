"""`python -m dp_ros.cli <command>`: the same as `dp-ros <command>`."""

import sys

from dp_ros.cli import main

sys.exit(main())
