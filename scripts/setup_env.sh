#!/usr/bin/env bash
# One-command set-up: .venv with every pinned dependency, the Debian run-time libraries, and
# dp_ros installed in editable mode. Idempotent: a second run only checks stamps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

DEBS="libusb-1.0-0 libspnav0"   # pyrealsense2 needs libusb; the SpaceMouse backend needs libspnav
missing=""
for d in $DEBS; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install$missing"
    (apt-get install -y -q $missing >/dev/null 2>&1) || { apt-get update -q >/dev/null 2>&1; apt-get install -y -q $missing >/dev/null; }
  else
    echo "[setup] WARNING: Debian packages missing:$missing (run: sudo apt-get install$missing)." >&2
    echo "[setup]          RealSense and SpaceMouse backends will not load without them; sim works." >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.dp_ros-installed
want=$(cat requirements.txt setup.py | sha256sum | cut -c1-16)
if [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned requirements into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > $stamp
fi
