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
