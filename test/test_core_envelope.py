import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.core.envelope import FLAG_NAMES, SafetyEnvelope
from dp_ros.core.transforms import quat_angle

LO = np.array([0.30, -0.25, 0.02])
HI = np.array([0.75, 0.25, 0.40])
VMAX, AMAX, WMAX = 0.25, 1.5, 1.0
DOWN = [1.0, 0.0, 0.0, 0.0]
TOL = 1e-9


def env(**kw):
    return SafetyEnvelope(LO, HI, VMAX, AMAX, WMAX, **kw)


def _adversarial_target(rng, last):
    kind = rng.integers(0, 8)
    q = Rotation.random(random_state=rng).as_quat()
    if kind == 0:
        return np.array([np.nan, 0.4, 0.1, *q])
    if kind == 1:
        return np.array([0.5, np.inf, 0.1, *q])
    if kind == 2:
        return np.array([0.5, 0.0, -np.inf, 0, 0, 0, 0])      # inf and a zero quaternion
    if kind == 3:
        return np.concatenate([rng.normal(scale=10.0, size=3), q])   # far outside
    if kind == 4:
        return np.concatenate([last[:3] + rng.normal(scale=0.001, size=3), last[3:]])   # small step
    if kind == 5:                                              # on or just beyond one face
        pos = rng.uniform(LO, HI)
        axis = rng.integers(0, 3)
        pos[axis] = rng.choice([LO[axis], HI[axis]]) + rng.normal(scale=0.01)
        return np.concatenate([pos, q])
    if kind == 6:
        return "not a pose"
    return np.concatenate([rng.uniform(LO, HI), q])


@pytest.mark.parametrize("dt", [1 / 125, 1 / 500, 0.02])
def test_random_adversarial_targets_stay_inside_limits(dt):
    rng = np.random.default_rng(int(1 / dt))
    e = env()
    cmd = np.array([0.5, 0.0, 0.2, *DOWN])
    vel = np.zeros(3)
    hold = 0
    cmds, vels, dts, counts = [cmd], [vel], [], dict.fromkeys(FLAG_NAMES, 0)
    for i in range(5000):
        if hold == 0:                                          # targets hold a while, then jump
            target = _adversarial_target(rng, cmd)
            hold = int(rng.choice([1, 5, 50, 400]))
        hold -= 1
        dt_i = dt * rng.uniform(0.95, 1.05)                   # some jitter (the servo passes its period)
        cmd, vel, flags = e.clamp(target, cmd, vel, dt_i)
        assert set(flags) == set(FLAG_NAMES)
        for k, on in flags.items():
            counts[k] += on
        cmds.append(cmd)
        vels.append(vel)
        dts.append(dt_i)
    cmds, vels, dts = np.array(cmds), np.array(vels), np.array(dts)
    assert np.all(np.isfinite(cmds)) and np.all(np.isfinite(vels))
    assert np.all(cmds[:, :3] >= LO - TOL) and np.all(cmds[:, :3] <= HI + TOL)
    assert np.all(np.linalg.norm(vels, axis=1) <= VMAX + 1e-9)
    assert np.all(np.linalg.norm(np.diff(vels, axis=0), axis=1) <= AMAX * dts + 1e-9)
    np.testing.assert_allclose(np.diff(cmds[:, :3], axis=0), vels[1:] * dts[:, None], atol=1e-12)
    assert np.all(quat_angle(cmds[:-1, 3:], cmds[1:, 3:]) <= WMAX * dts + 1e-9)
    assert np.allclose(np.linalg.norm(cmds[:, 3:], axis=1), 1.0)
    assert counts["hard_clamp"] == 0                          # braking keeps it off the backstop
    for k in ("invalid_target", "workspace", "speed", "acceleration", "rotation"):
        assert counts[k] > 0, k                                # the adversary exercised each limit


def test_nan_target_holds_and_brakes_without_exceeding_acc():
    e = env()
    cmd = np.array([0.5, 0.0, 0.2, *DOWN])
    vel = np.array([VMAX, 0.0, 0.0])
    dt = 1 / 125
    for _ in range(100):
        new, v, flags = e.clamp([np.nan] * 7, cmd, vel, dt)
        assert flags["invalid_target"]
        assert np.linalg.norm(v - vel) <= AMAX * dt + 1e-12
        cmd, vel = new, v
    assert np.allclose(vel, 0.0)                                # stopped
    new, v, flags = e.clamp([np.nan] * 7, cmd, np.zeros(3), dt)
    assert np.allclose(new, cmd) and flags["invalid_target"]   # at rest: exactly the last command


def test_reaches_target_without_overshoot():
    e = env()
    cmd = np.array([0.4, 0.0, 0.2, *DOWN])
    target = np.array([0.6, 0.1, 0.1, *DOWN])
    vel = np.zeros(3)
    dt = 1 / 125
    dist = []
    for _ in range(1000):
        cmd, vel, flags = e.clamp(target, cmd, vel, dt)
        dist.append(np.linalg.norm(target[:3] - cmd[:3]))
    assert dist[-1] < 1e-9
    assert np.all(np.diff(dist) <= 1e-12)                       # monotone approach, no overshoot


def test_tracks_a_slow_target_exactly():
    e = env()
    dt = 1 / 125
    cmd = np.array([0.5, 0.0, 0.2, *DOWN])
    vel = np.zeros(3)
    for i in range(200):
        target = cmd.copy()
        target[0] += 0.0001                                     # 12.5 mm/s, well inside limits
        new, vel, flags = e.clamp(target, cmd, vel, dt)
        cmd = new
    assert np.linalg.norm(target[:3] - cmd[:3]) < 1e-4


def test_workspace_clamp_flags_and_wall_stop():
    e = env()
    dt = 1 / 125
    cmd = np.array([0.70, 0.0, 0.2, *DOWN])
    vel = np.array([VMAX, 0.0, 0.0])                            # heading for the x wall
    braked = 0
    for _ in range(300):
        new, v, flags = e.clamp([5.0, 0.0, 0.2, *DOWN], cmd, vel, dt)
        assert new[0] <= HI[0] + TOL and np.linalg.norm(v - vel) <= AMAX * dt + 1e-12
        braked += flags["wall_brake"]
        cmd, vel = new, v
    assert flags["workspace"] and braked > 0 and not flags["hard_clamp"]
    assert cmd[0] == pytest.approx(HI[0], abs=1e-6) and np.allclose(vel, 0.0, atol=1e-6)


def test_velocity_reset_near_wall_keeps_box():
    """A caller that feeds an inconsistent velocity (e.g. resets it) near a wall: the box wins."""
    e = env()
    dt = 1 / 125
    cmd = np.array([HI[0] - 0.001, 0.0, 0.2, *DOWN])
    new, v, flags = e.clamp([5.0, 0.0, 0.2, *DOWN], cmd, np.array([VMAX, 0.0, 0.0]), dt)
    assert flags["wall_brake"] and e.contains(new)


def test_rotation_step_is_limited():
    e = env()
    dt = 0.01
    cmd = np.array([0.5, 0.0, 0.2, 0, 0, 0, 1.0])
    target = np.array([0.5, 0.0, 0.2, *Rotation.from_euler("z", 90, degrees=True).as_quat()])
    new, _, flags = e.clamp(target, cmd, np.zeros(3), dt)
    assert flags["rotation"]
    assert quat_angle(cmd[3:], new[3:]) == pytest.approx(WMAX * dt)
    # the step is toward the target (on the slerp path)
    assert quat_angle(new[3:], target[3:]) == pytest.approx(np.pi / 2 - WMAX * dt)
    small = np.array([0.5, 0.0, 0.2, *Rotation.from_euler("z", 0.001).as_quat()])
    new, _, flags = e.clamp(small, cmd, np.zeros(3), dt)
    assert not flags["rotation"] and quat_angle(new[3:], small[3:]) < 1e-12


def test_orientation_limit_cone():
    e = env(orientation_limit={"reference_quat": DOWN, "max_angle_rad": 0.3})
    dt = 0.01
    cmd = np.array([0.5, 0.0, 0.2, *DOWN])
    vel = np.zeros(3)
    tilted = Rotation.from_quat(DOWN) * Rotation.from_euler("x", 1.2)
    target = np.array([0.5, 0.0, 0.2, *tilted.as_quat()])
    for _ in range(300):
        cmd, vel, flags = e.clamp(target, cmd, vel, dt)
        assert e.contains(cmd)
    assert flags["orientation"]
    assert quat_angle(DOWN, cmd[3:]) == pytest.approx(0.3, abs=1e-6)


def test_start_outside_box_moves_back_without_jump():
    e = env()
    dt = 1 / 125
    cmd = np.array([0.80, 0.0, 0.2, *DOWN])                   # 5 cm beyond x max
    vel = np.zeros(3)
    for _ in range(500):
        new, v, flags = e.clamp([0.9, 0.0, 0.2, *DOWN], cmd, vel, dt)
        assert np.linalg.norm(v - vel) <= AMAX * dt + 1e-9
        assert new[0] <= cmd[0] + 1e-12                       # never further out
        cmd, vel = new, v
    assert e.contains(cmd)


def test_from_dict_validation():
    cfg = {"workspace_min": LO.tolist(), "workspace_max": HI.tolist(), "max_lin_speed": 0.25,
           "max_lin_acc": 1.5, "max_ang_speed": 1.0}
    e = SafetyEnvelope.from_dict(cfg)
    assert e.max_ang_speed == 1.0
    alt = dict(cfg)
    alt["max_ang_speed_rad_s"] = alt.pop("max_ang_speed")
    assert SafetyEnvelope.from_dict(alt).max_ang_speed == 1.0
    bad_cases = [
        ({"workspace_min": HI.tolist(), "workspace_max": LO.tolist()}, "workspace_min must be <"),
        ({"max_lin_speed": 0.0}, "max_lin_speed must be a positive"),
        ({"max_lin_acc": -1.0}, "max_lin_acc must be a positive"),
        ({"max_ang_speed": float("nan")}, "max_ang_speed must be a positive"),
        ({"max_lin_speed": "fast"}, "max_lin_speed must be a number"),
        ({"workspace_min": [0.0, 0.0]}, "3 values"),
        ({"max_lin_sped": 1.0}, "unknown safety envelope keys"),
        ({"orientation_limit": {"reference_quat": DOWN, "max_angle_rad": 4.0}}, r"\(0, pi\]"),
    ]
    for change, msg in bad_cases:
        with pytest.raises(ValueError, match=msg):
            SafetyEnvelope.from_dict({**cfg, **change})
    missing = dict(cfg)
    del missing["max_lin_acc"]
    with pytest.raises(ValueError, match="missing"):
        SafetyEnvelope.from_dict(missing)


def test_invalid_servo_state_is_an_error():
    e = env()
    ok = np.array([0.5, 0.0, 0.2, *DOWN])
    with pytest.raises(ValueError):
        e.clamp(ok, ok, np.zeros(3), 0.0)
    with pytest.raises(ValueError):
        e.clamp(ok, [np.nan] * 7, np.zeros(3), 0.01)
    with pytest.raises(ValueError):
        e.clamp(ok, ok, [np.nan, 0, 0], 0.01)
