"""`dp-ros faults --short` on the sim deploy graph: every injected fault handled safely (inside the
box, within speed / acceleration / rotation limits per tick, held, latched and recovered as each
row specifies). The full table is in the README (`dp-ros faults`)."""

import json
import subprocess
import sys


def test_short_fault_table_is_all_safe(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dp_ros.cli", "faults", "--short", "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {r["fault"]: r for r in result["rows"]}
    assert proc.returncode == 0 and result["all_safe"], proc.stderr[-3000:]
    assert len(rows) == 5
    for row in rows.values():
        assert row["outside_box_m"] == 0.0 and row["within_limits"]
    estop = next(r for name, r in rows.items() if name.startswith("emergency stop"))
    assert estop["latched"] and estop["recovered"] and estop["diagnostics"]["level"] is not None
    frozen = next(r for name, r in rows.items() if name.startswith("robot state frozen"))
    assert frozen["latched"] and frozen["time_to_hold_s"] is not None
    assert any("robot state stale" in reason for reason in frozen["hold_reasons"])
    disable = next(r for name, r in rows.items() if name.startswith("disable"))
    assert "disabled" in disable["hold_reasons"] and disable["recovered"]
    camera = next(r for name, r in rows.items() if name.startswith("camera stalled"))
    assert camera["time_to_hold_s"] is not None and camera["recovered"] and not camera["latched"]


def test_a_resync_is_recognized_when_its_state_arrived_before_the_row_started():
    """Under load the re-synced command can be received after the row's start while the state
    that marked it re-synced was received before: the jump back to the measured pose is not a
    motion, and must not count as one (it read as 20 m/s^2 in a loaded CI run)."""
    from dp_ros.runtime.faults import FaultHarness, _Log
    h = FaultHarness.__new__(FaultHarness)      # _measure only: no graph, no middleware
    h.servo = {"rate_hz": 500.0, "max_lin_speed": 0.25, "max_lin_acc": 1.5, "max_ang_speed": 1.0,
               "workspace_min": [0.0, -1.0, 0.0], "workspace_max": [1.0, 1.0, 1.0]}
    h.missed_ticks_before = 0
    h.log = _Log()
    down = [1.0, 0.0, 0.0, 0.0]
    t0 = 1_000_000_000
    h.log.states.append((t0 - 5, "following policy", False, False, 42))          # before the row
    for k, x in enumerate([0.5, 0.5, 0.5001, 0.5001, 0.5001]):                      # 0.1 mm jump at tick 2
        h.log.commands.append((t0 + k, 40 + k, [x, 0.0, 0.1, *down], 100 + k))
    assert h._measure(t0)["within_limits"]
    h.log.states.clear()                        # without the re-sync mark the same jump is a violation
    assert not h._measure(t0)["within_limits"]
