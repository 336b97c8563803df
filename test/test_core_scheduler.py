import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.core.scheduler import ActionScheduler
from dp_ros.core.transforms import quat_angle

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
DT = 0.1
DT_NS = int(DT * 1e9)
TA, TP = 8, 16
LAT = 0.03
LAT_NS = int(LAT * 1e9)
V = np.array([0.2, 0.1, 0.0])        # nominal path speed (m/s)


def path(t_ns, offset=(0.0, 0.0, 0.0), yaw_offset=0.0):
    """Straight line at speed V, slowly yawing; offset models a new prediction's disagreement."""
    s = (np.asarray(t_ns) - T0) * 1e-9
    pos = s[:, None] * V + np.asarray(offset)
    q = Rotation.from_rotvec(np.outer(0.2 * s + yaw_offset, [0.0, 0.0, 1.0])).as_quat()
    return np.concatenate([pos, q], axis=1)


def chunk(t_obs_ns, offset=(0.0, 0.0, 0.0), yaw_offset=0.0, to=2):
    times = t_obs_ns - (to - 1) * DT_NS + DT_NS * np.arange(TP, dtype=np.int64)
    return times, path(times, offset, yaw_offset)


def sched(**kw):
    args = dict(action_horizon=TA, dt_s=DT, exec_latency_s=LAT)
    args.update(kw)
    return ActionScheduler(**args)


def test_keeps_first_ta_future_waypoints_and_drops_late():
    s = sched(stitch="none")
    times, poses = chunk(T0)
    now = T0 + 120 * MS                   # inference took 120 ms
    assert s.on_chunk(times, poses, now)
    plan_t = s.plan.times_ns
    assert len(plan_t) == TA
    assert plan_t[0] > now + LAT_NS and plan_t[0] - DT_NS <= now + LAT_NS
    assert s.stats["waypoints_dropped_stale"] == int(np.count_nonzero(times <= now + LAT_NS))
    np.testing.assert_allclose(s.plan.poses, poses[np.isin(times, plan_t)])


@pytest.mark.parametrize("latency_ms", [0, 120, 330, 740])
def test_observation_start_executes_the_steps_after_the_observation_whatever_the_latency(latency_ms):
    """horizon_start=observation: chunk indices To..To+Ta-1 (times after the observation, up to
    Ta*dt after it), minus those already late; the next request then goes out sooner."""
    s, arrival = sched(stitch="none", horizon_start="observation", obs_horizon=2), sched(stitch="none")
    times, poses = chunk(T0)               # index To-1 = 1 is the observation at T0
    now = T0 + latency_ms * MS
    assert s.on_chunk(times, poses, now) and arrival.on_chunk(times, poses, now)
    want = times[(times > now + LAT_NS) & (times > T0) & (times <= T0 + TA * DT_NS)]
    np.testing.assert_array_equal(s.plan.times_ns, want)
    np.testing.assert_allclose(s.plan.poses, poses[np.isin(times, want)])
    # arrival runs the same first waypoint on for Ta steps (or to the chunk's end)
    assert arrival.plan.times_ns[0] == s.plan.times_ns[0]
    assert len(arrival.plan.times_ns) == min(TA, np.count_nonzero(times > now + LAT_NS)) >= len(want)
    # the open loop ends Ta*dt after the observation, so the next request is due that much sooner
    assert s.plan.end_ns == T0 + TA * DT_NS


def test_observation_start_keeps_one_waypoint_when_the_latency_exceeds_the_window():
    s = sched(stitch="none", horizon_start="observation", obs_horizon=2)
    times, poses = chunk(T0)
    now = T0 + (TA + 2) * DT_NS            # arrived after its Ta steps were all due
    assert s.on_chunk(times, poses, now)
    assert len(s.plan.times_ns) == 1 and s.plan.times_ns[0] == times[times > now + LAT_NS][0]


def test_horizon_start_is_checked():
    with pytest.raises(ValueError, match="horizon_start"):
        sched(horizon_start="request")
    with pytest.raises(ValueError, match="obs_horizon"):
        sched(horizon_start="observation", obs_horizon=0)


def test_streamed_waypoints_are_always_beyond_latency():
    rng = np.random.default_rng(0)
    s = sched(stitch="none")
    times, poses = chunk(T0)
    s.on_chunk(times, poses, T0 + 100 * MS)
    last_len = TA + 1
    for now in np.sort(rng.integers(T0, T0 + 2 * 10**9, size=300)):
        wt, wp = s.waypoints(int(now))
        assert np.all(wt > now + LAT_NS)
        assert len(wt) == len(wp) and len(wt) <= last_len
        last_len = len(wt)
    assert len(s.waypoints(T0 + 10**10)[0]) == 0          # all late: servo holds, no replay
    assert s.stats["stream_empty"] > 0


def test_all_late_chunk_is_rejected():
    s = sched()
    times, poses = chunk(T0)
    assert not s.on_chunk(times, poses, T0 + 10 * 10**9)
    assert "late" in s.last_reject_reason
    assert s.plan is None and len(s.waypoints(T0)[0]) == 0


@pytest.mark.parametrize("bad", ["nan", "inf", "zero_quat"])
def test_bad_chunk_rejected_and_old_kept(bad):
    s = sched()
    times, poses = chunk(T0)
    assert s.on_chunk(times, poses, T0 + 100 * MS)
    before = s.waypoints(T0 + 150 * MS)
    t2, p2 = chunk(T0 + 300 * MS)
    p2 = p2.copy()
    if bad == "nan":
        p2[5, 1] = np.nan
    elif bad == "inf":
        p2[7, 2] = np.inf
    else:
        p2[3, 3:] = 0.0
    assert not s.on_chunk(t2, p2, T0 + 400 * MS)
    assert s.last_reject_reason.startswith("invalid chunk")
    assert s.stats["chunks_rejected"] == 1
    after = s.waypoints(T0 + 150 * MS)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1])


def test_non_increasing_and_old_chunks_rejected():
    s = sched()
    times, poses = chunk(T0 + 200 * MS)
    assert s.on_chunk(times, poses, T0 + 300 * MS)
    bad_t = times.copy()
    bad_t[4] = bad_t[3]
    assert not s.on_chunk(bad_t, poses, T0 + 310 * MS)
    assert "strictly increasing" in s.last_reject_reason
    older_t, older_p = chunk(T0 + 100 * MS)                 # arrived out of order
    assert not s.on_chunk(older_t, older_p, T0 + 320 * MS)
    assert "before or at the current chunk" in s.last_reject_reason
    assert not s.on_chunk(times, poses, T0 + 320 * MS)     # duplicate
    assert s.stats["chunks_rejected"] == 3 and s.stats["chunks_accepted"] == 1


def _switch_path(stitch, offset, yaw_offset=0.0, blend_steps=3):
    """Old chunk executing; a new chunk whose prediction is offset arrives mid-way. Returns the
    commanded waypoint sequence as the servo receives it (each time's last streamed pose)."""
    s = sched(stitch=stitch, blend_steps=blend_steps)
    t_obs = T0
    s.on_chunk(*chunk(t_obs), t_obs + 100 * MS)
    executed = []
    for now in range(t_obs + 100 * MS, t_obs + 2000 * MS, 10 * MS):
        if now == t_obs + 500 * MS:
            t_obs2 = t_obs + 400 * MS + 7 * MS             # new grid is not aligned with the old
            assert s.on_chunk(*chunk(t_obs2, offset, yaw_offset), now)
        wt, wp = s.waypoints(now)
        executed = _receive(executed, wt, wp, now)
    return np.array([t for t, _ in executed]), np.stack([p for _, p in executed])


def _receive(executed, wt, wp, now):
    """The servo replaces everything after now + latency with each message it receives."""
    executed = [(t, p) for t, p in executed if t <= now + LAT_NS]
    return executed + [(int(t), p) for t, p in zip(wt, wp)]


def _max_steps(poses):
    lin = np.linalg.norm(np.diff(poses[:, :3], axis=0), axis=1).max()
    ang = max(quat_angle(a, b) for a, b in zip(poses[:-1, 3:], poses[1:, 3:]))
    return lin, ang


def test_blend_removes_the_jump_at_chunk_boundary():
    offset = np.array([0.05, -0.04, 0.02])                # 6.7 cm disagreement
    yaw = 0.3
    nominal = np.linalg.norm(V) * DT                        # step of the path itself
    _, none_p = _switch_path("none", offset, yaw)
    _, blend_p = _switch_path("blend", offset, yaw, blend_steps=3)
    none_lin, none_ang = _max_steps(none_p)
    blend_lin, blend_ang = _max_steps(blend_p)
    assert none_lin > np.linalg.norm(offset) * 0.9          # none jumps by about the offset
    assert blend_lin <= nominal + np.linalg.norm(offset) / 3 + 1e-9
    assert none_ang > yaw * 0.9
    assert blend_ang <= 0.2 * DT + yaw / 3 + 1e-9
    # more blend steps, smaller steps
    _, blend6 = _switch_path("blend", offset, yaw, blend_steps=6)
    assert _max_steps(blend6)[0] <= nominal + np.linalg.norm(offset) / 6 + 1e-9


def test_blend_first_new_waypoint_lies_on_old_path():
    s = sched(stitch="blend", blend_steps=4)
    s.on_chunk(*chunk(T0), T0 + 100 * MS)
    old = s.plan
    t2, p2 = chunk(T0 + 400 * MS + 13 * MS, offset=(0.1, 0.1, 0.1), yaw_offset=1.0)
    assert s.on_chunk(t2, p2, T0 + 500 * MS)
    new = s.plan
    j0 = int(np.argmax(np.isin(new.times_ns, t2)))          # first waypoint of the new chunk
    assert np.all(np.isin(new.times_ns[:j0], old.times_ns))  # before it: old waypoints (bridge)
    np.testing.assert_allclose(new.poses[:j0], old.poses[np.isin(old.times_ns, new.times_ns[:j0])])
    first = new.times_ns[j0]
    assert np.allclose(new.poses[j0, :3], old(first)[:3])
    assert quat_angle(new.poses[j0, 3:], old(first)[3:]) < 1e-9
    # from blend_steps on, the new prediction itself
    k = j0 + 4
    assert np.allclose(new.poses[k], p2[np.searchsorted(t2, new.times_ns[k])])
    assert np.count_nonzero(np.isin(new.times_ns, t2)) == TA


def test_ensemble_reduces_the_jump():
    offset = np.array([0.05, -0.04, 0.02])
    _, none_p = _switch_path("none", offset)
    _, ens_p = _switch_path("ensemble", offset)
    assert _max_steps(ens_p)[0] < 0.7 * _max_steps(none_p)[0]


def test_needs_inference_timing_and_outstanding_requests():
    s = sched(initial_latency_s=0.15, request_timeout_s=1.0)
    assert s.needs_inference(T0)                            # nothing planned
    s.mark_requested(T0)
    assert not s.needs_inference(T0 + 10 * MS)              # request outstanding
    times, poses = chunk(T0)
    now = T0 + 120 * MS
    s.on_chunk(times, poses, now)
    assert not s.request_outstanding
    assert s.latency_s == pytest.approx(0.12)               # measured from the request
    end = s.plan.end_ns
    trigger = end - LAT_NS - int(0.12e9)                    # remaining horizon == measured latency
    assert not s.needs_inference(trigger - 5 * MS)
    assert s.needs_inference(trigger)
    s.mark_requested(trigger)
    assert not s.needs_inference(trigger + 500 * MS)
    assert s.needs_inference(trigger + 1000 * MS)           # timed out: ask again
    assert s.stats["request_timeouts"] == 1


def test_latency_ewma_moves_the_trigger():
    s = sched(initial_latency_s=0.1, latency_alpha=0.5, latency_dev_k=0.0)
    s.report_latency(0.3)
    assert s.latency_s == pytest.approx(0.3)               # first sample replaces the prior
    s.report_latency(0.1)
    assert s.latency_s == pytest.approx(0.2)
    s.report_latency(float("nan"))
    s.report_latency(-1.0)
    assert s.latency_s == pytest.approx(0.2)
    s.latency_dev_k = 2.0                                   # jitter adds lead time
    assert s.latency_dev_s == pytest.approx(0.1)
    assert s.expected_latency_s == pytest.approx(0.4)
    s.latency_dev_k = 0.0
    s.on_chunk(*chunk(T0), T0 + 100 * MS)
    end = s.plan.end_ns
    assert s.needs_inference(end - LAT_NS - int(0.2e9))
    assert not s.needs_inference(end - LAT_NS - int(0.2e9) - MS)


@pytest.mark.parametrize("stitch", ["blend", "ensemble", "none"])
def test_closed_loop_receding_horizon(stitch):
    """Random inference latencies and prediction noise: the stream never contains a past
    waypoint, never replays, and keeps the arm fed once it is running."""
    rng = np.random.default_rng(42)
    s = sched(stitch=stitch, initial_latency_s=0.12, margin_s=0.01)   # polled every 10 ms
    pending = []                                            # (arrival_ns, t_obs, latency_s)
    executed = []
    empty_after_start = 0
    started = False
    for now in range(T0, T0 + 20 * 10**9, 10 * MS):
        if s.needs_inference(now):
            s.mark_requested(now)
            lat = rng.uniform(0.08, 0.16)
            pending.append((now + int(lat * 1e9), now - 30 * MS, lat))
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            off = rng.normal(scale=0.005, size=3)
            assert s.on_chunk(*chunk(item[1], off), now)
        wt, wp = s.waypoints(now)
        assert np.all(wt > now + LAT_NS)
        started |= len(wt) > 0
        empty_after_start += started and len(wt) == 0
        executed = _receive(executed, wt, wp, now)
    assert empty_after_start == 0
    ts = np.array([t for t, _ in executed])
    assert np.all(np.diff(ts) > 0) and np.diff(ts).max() <= DT_NS
    assert s.stats["chunks_rejected"] == 0 and s.stats["chunks_accepted"] > 20


def test_ensemble_weights_follow_act():
    """Overlapping predictions are averaged with exp(-k*i) weights, i = 0 for the oldest."""
    for k, w_old in ((0.0, 0.5), (1.0, 1.0 / (1.0 + np.exp(-1.0)))):
        s = sched(stitch="ensemble", ensemble_k=k)
        s.on_chunk(*chunk(T0), T0 + 100 * MS)
        t2, p2 = chunk(T0 + 200 * MS, offset=(0.1, 0.0, 0.0))   # same grid, 10 cm apart in x
        assert s.on_chunk(t2, p2, T0 + 250 * MS)
        plan = s.plan
        j = int(np.argmax(np.isin(plan.times_ns, t2)))
        t = plan.times_ns[j]
        expect_x = path(np.array([t]))[0, 0] + (1.0 - w_old) * 0.1
        assert plan.poses[j, 0] == pytest.approx(expect_x)


def test_unstreamed_late_waypoints_are_counted_once():
    s = sched(stitch="none")
    s.on_chunk(*chunk(T0), T0 + 100 * MS)
    planned = len(s.plan)
    assert s.stats["waypoints_dropped_stale"] == 3          # T0-100, T0, T0+100 ms were late
    s.waypoints(T0 + 150 * MS)                              # everything still ahead is streamed
    s.waypoints(T0 + 10**10)                                # stall: nothing new is dropped
    assert s.stats["waypoints_dropped_stale"] == 3
    s2 = sched(stitch="none")
    s2.on_chunk(*chunk(T0), T0 + 100 * MS)
    s2.waypoints(T0 + 10**10)                               # publisher stalled from the start
    assert s2.stats["waypoints_dropped_stale"] == 3 + planned
    s2.waypoints(T0 + 2 * 10**10)
    assert s2.stats["waypoints_dropped_stale"] == 3 + planned


def test_inpaint_requests_carry_the_plan_and_its_chunks_tail_while_it_reaches_now():
    s = sched(stitch="inpaint")
    t, p = s.committed_path(T0)
    assert len(t) == 0                                  # no plan: nothing committed
    times, poses = chunk(T0)
    now = T0 + 120 * MS
    assert s.on_chunk(times, poses, now)
    t, p = s.committed_path(now)
    # the plan (Ta waypoints after now + latency) continued by the rest of the chunk's prediction
    kept = times[times > now + LAT_NS][:TA]
    assert t[0] == kept[0] and t[-1] == times[-1]
    np.testing.assert_allclose(p, path(t), atol=1e-12)
    assert len(s.committed_path(int(kept[-1]) - LAT_NS)[0]) > 0       # plan still reaches now: committed
    assert len(s.committed_path(int(kept[-1]) - LAT_NS + 1)[0]) == 0  # ran out before now: nothing
    b = sched(stitch="blend")
    b.on_chunk(times, poses, now)
    assert len(b.committed_path(now)[0]) == 0          # only inpaint sends it


def test_inpaint_blends_only_the_residual_offset_in():
    # A chunk that continues the plan (as an inpainted one does) is taken unchanged; a residual
    # offset is blended in from the old path as in "blend", so the first new waypoint never jumps.
    s = sched(stitch="inpaint")
    times, poses = chunk(T0)
    s.on_chunk(times, poses, T0 + 120 * MS)
    t2 = T0 + 5 * DT_NS
    now = t2 + 120 * MS
    times2, poses2 = chunk(t2)
    assert s.on_chunk(times2, poses2, now)
    np.testing.assert_allclose(s.plan.poses[:, :3], path(s.plan.times_ns)[:, :3], atol=1e-12)
    s2 = sched(stitch="inpaint")
    s2.on_chunk(times, poses, T0 + 120 * MS)
    assert s2.on_chunk(*chunk(t2, offset=(0.01, 0.0, 0.0)), now)
    first = s2.plan.poses[0, :3]
    np.testing.assert_allclose(first, path(s2.plan.times_ns[:1])[0, :3], atol=1e-9)   # starts on the old path
