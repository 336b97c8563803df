"""`python -m dp_ros.cli <command>`: the same as `dp-ros <command>`."""

from dp_ros.cli import entry

entry()
