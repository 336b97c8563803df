"""The functional core stays ROS-free: dp_ros/core, dp_ros/policy and dp_ros/data never import
rclpy or any ROS interface / launch package, neither at module level nor inside a function
(static scan), nor through another module (fresh interpreter). The package root holds only the
graph, the topic names and the package marker; everything else lives in a subpackage."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dp_ros

ROOT = Path(dp_ros.__file__).resolve().parent
ROS_FREE = ("core", "policy", "data")
# dp_ros packages that are the ROS shell (they import rclpy, some lazily)
ROS_SHELL = ("dp_ros.nodes", "dp_ros.runtime", "dp_ros.cli")


def is_ros(module: str) -> bool:
    top = module.split(".")[0]
    return (top in ("rclpy", "launch", "launch_ros") or top.startswith("rosidl")
            or top.endswith(("_msgs", "_srvs")))


def imported_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def modules(package: str) -> list[str]:
    return sorted(f"dp_ros.{package}.{p.stem}" if p.stem != "__init__" else f"dp_ros.{package}"
                  for p in (ROOT / package).glob("*.py"))


def modules_loaded_by(mods: list[str]) -> list[str]:
    """Every module a fresh interpreter holds after importing `mods`."""
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module(m)\n"
            "print('\\n'.join(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("package", ROS_FREE)
def test_no_ros_import_in_source(package):
    bad = [f"{path.relative_to(ROOT.parent)}:{line}: import {name}"
           for path in sorted((ROOT / package).rglob("*.py"))
           for line, name in imported_names(path)
           if is_ros(name) or name.startswith(ROS_SHELL)]
    assert not bad, "ROS imports in the ROS-free core:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ROS_FREE)
def test_importing_every_module_loads_no_ros(package):
    loaded = modules_loaded_by(modules(package))
    assert "rclpy" not in loaded
    assert not [m for m in loaded if is_ros(m)], f"dp_ros.{package} loads ROS modules"


def test_package_root_holds_only_graph_and_topics():
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["__init__.py", "graph.py", "topics.py"]


def test_training_and_lockstep_evaluation_load_no_ros():
    """`dp-train`, `dp-ros eval --lockstep`, `bench` and `export` run where ROS 2 is not installed
    (a rented GPU machine): importing their modules loads no ROS package."""
    mods = ["dp_ros.train.cli", "dp_ros.train.trainer", "dp_ros.cli", "dp_ros.cli.eval",
            "dp_ros.cli.bench", "dp_ros.cli.export", "dp_ros.sim.lockstep"]
    assert not [m for m in modules_loaded_by(mods) if is_ros(m)]
