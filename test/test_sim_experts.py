import numpy as np
import pytest
from shapely.geometry import LineString

from dp_ros.sim.expert_bench import _InlineTeleop, _make_teleop, main, run_episode
from dp_ros.sim.experts import PushTExpert, ReachExpert, _Commander, make_expert
from dp_ros.sim.push_planner import PUSHER_RADIUS, _place, _Router, _T_POLY, pose_error
from dp_ros.sim.world import SimWorld, TaskPlaneMapping

# The deploy config's geometry: task plane 0.4 m square, servo workspace just inside it.
MAPPING = TaskPlaneMapping((0.35, -0.20), (0.75, 0.20))
WS_MIN, WS_MAX = [0.36, -0.19, 0.02], [0.74, 0.19, 0.40]
HOME = [0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0]
DT = 0.1


def setup(task, seed=0):
    world = SimWorld(task, MAPPING, camera_names=(), home_pose=HOME)
    teleop, _ = _make_teleop(WS_MIN, WS_MAX, 0.25, 0.05)
    return world, make_expert(task, MAPPING, 0.25, DT, seed), teleop


def test_factory():
    assert isinstance(make_expert("reach", MAPPING, 0.25, DT, 0), ReachExpert)
    assert isinstance(make_expert("pusht", MAPPING, 0.25, DT, 0), PushTExpert)
    with pytest.raises(ValueError):
        make_expert("stack", MAPPING, 0.25, DT, 0)


def test_commander_moves_the_teleop_target_by_what_was_asked():
    cmd = _Commander(MAPPING, 0.25, DT, deadzone=0.05)
    teleop = _InlineTeleop(WS_MIN, WS_MAX, 0.25, 0.05)
    rng = np.random.default_rng(0)
    for _ in range(200):
        teleop.reset(HOME)
        start = MAPPING.to_task(teleop.target[:2])
        desired = start + rng.uniform(-60, 60, 2)
        ev = cmd.event(start, desired)
        assert ev.translation.shape == (3,) and np.all(np.abs(ev.translation) <= 1.0)
        assert ev.translation[2] == 0 and not any(ev.buttons)
        teleop.step(ev.translation, ev.rotation, ev.buttons, DT)
        moved = MAPPING.to_task(teleop.target[:2]) - start
        want = desired - start
        step = 0.25 * DT * MAPPING.units_per_m[0]  # 32 units: one full-scale step
        if np.abs(want).max() <= step:
            np.testing.assert_allclose(moved, want, atol=0.25)
        else:  # saturated: same direction, full speed on the larger axis
            assert np.dot(moved, want) / (np.linalg.norm(moved) * np.linalg.norm(want)) > 0.999
            assert np.abs(moved).max() == pytest.approx(step, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reach_expert_reaches_and_holds(seed):
    world, expert, teleop = setup("reach")
    res = run_episode(world, expert, teleop, seed, seed + 10, DT, 10.0)
    assert res["success"] and res["actions_in_range"]
    # After success the expert rests: no more motion commands.
    ev = expert.act(world.task_state(), world.tcp_pose(), teleop.target[:2])
    assert expert.done and not np.any(ev.translation)


def test_router_goes_around_the_block():
    router = _Router()
    block = np.array([256.0, 256.0, 0.4])
    poly = _place(_T_POLY, block)
    rng = np.random.default_rng(0)
    for _ in range(20):
        # From one side of the T to the other: the straight line would cross it.
        a = rng.uniform(0, 2 * np.pi)
        pusher = block[:2] + 150 * np.array([np.cos(a), np.sin(a)])
        start = block[:2] - 150 * np.array([np.cos(a), np.sin(a)])
        u = (block[:2] - start) / np.linalg.norm(block[:2] - start)
        path = router.route(pusher, start, u, block, margin=8.0)
        assert path is not None
        assert LineString(path).distance(poly) > PUSHER_RADIUS + 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pusht_expert_solves(seed):
    world, expert, teleop = setup("pusht")
    res = run_episode(world, expert, teleop, seed, seed, DT, 30.0)
    assert res["success"], res
    assert res["final_coverage"] > 0.95 and res["actions_in_range"]


def test_pusht_expert_refines_past_success_to_its_finish_coverage():
    # Stopping at the first success leaves demonstrations ending at 0.95; a policy that imitates them
    # stalls just under the threshold. With a finish coverage the expert keeps aligning the T.
    world, _, teleop = setup("pusht")
    at_success = run_episode(world, make_expert("pusht", MAPPING, 0.25, DT, 0), teleop, 3, 3, DT, 30.0)
    expert = make_expert("pusht", MAPPING, 0.25, DT, 0, finish_coverage=0.97)
    refined = run_episode(world, expert, teleop, 3, 3, DT, 30.0)
    assert at_success["success"] and at_success["max_coverage"] < 0.97, at_success
    assert refined["success"] and expert.done and refined["max_coverage"] >= 0.97, refined
    assert refined["time_s"] > at_success["time_s"]


def test_pusht_demonstrations_vary_with_the_expert_seed():
    world, expert, teleop = setup("pusht")
    a = run_episode(world, expert, teleop, 5, 1, DT, 30.0, record=True)
    b = run_episode(world, expert, teleop, 5, 2, DT, 30.0, record=True)
    assert a["success"] and b["success"]
    n = min(len(a["trajectory"]), len(b["trajectory"]))
    # Same block start, different plans: the pusher paths part ways by a lot.
    gap = np.linalg.norm(MAPPING.to_task(a["trajectory"][:n, :2]) - MAPPING.to_task(b["trajectory"][:n, :2]), axis=1)
    assert gap.max() > 50.0
    # ... and the same seeds replay the same demonstration.
    c = run_episode(world, expert, teleop, 5, 1, DT, 30.0, record=True)
    np.testing.assert_allclose(c["trajectory"], a["trajectory"])


def test_pusht_expert_follows_world_resets_without_reset_call():
    # The teleop node keeps one expert and does not reset it per episode.
    world, expert, teleop = setup("pusht")
    assert run_episode(world, expert, teleop, 0, 0, DT, 30.0)["success"]
    assert not np.any(expert.act(world.task_state(), world.tcp_pose(), teleop.target[:2]).translation)
    assert expert.done
    world.reset(7)
    teleop.reset(world.tcp_pose())
    start_err = pose_error(world.task.block_pose, world.task.goal_pose)
    for _ in range(300):
        ev = expert.act(world.task_state(), world.tcp_pose(), teleop.target[:2].copy())
        teleop.step(ev.translation, ev.rotation, ev.buttons, DT)
        world.servo(teleop.target)
        world.step(DT)
        if world.task.success:
            break
    assert world.task.success and pose_error(world.task.block_pose, world.task.goal_pose) < start_err


def test_bench_main_prints_json(capsys):
    assert main(["--task", "reach", "--episodes", "2", "--seed", "3", "--time-limit", "10"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 2 and out["success_rate"] == 1.0 and out["actions_in_range"]
    assert set(out["compute_ms_per_step"]) == {"mean", "p50", "p95", "max"}


def test_an_expert_can_act_on_old_observations():
    """DelayedObservations (teleop_node.expert_obs_delay_s, expert_bench --obs-delay-steps): the
    expert acts on the world as it was K steps earlier (task state and TCP; its own target stays
    current), the episode's first observation until then, and forgets them at a new episode.
    Push-T seed 0 is still solved with 0.3 s old observations, later than with fresh ones."""
    from dp_ros.sim.experts import DelayedObservations, expert_options

    world, _, teleop = setup("pusht")
    seen, pushers = [], []

    class Recording(PushTExpert):
        def act(self, task_state, tcp_pose, target_xy_m):
            seen.append(np.asarray(task_state["pusher_xy"], dtype=float))
            pushers.append(np.asarray(world.task_state()["pusher_xy"], dtype=float))
            return super().act(task_state, tcp_pose, target_xy_m)

    fresh = run_episode(world, make_expert("pusht", MAPPING, 0.25, DT, 0), teleop, 0, 0, DT, 30.0)
    late_expert = DelayedObservations(Recording(MAPPING, 0.25, DT, rng=0), 3)
    late = run_episode(world, late_expert, teleop, 0, 0, DT, 30.0)
    assert len(seen) > 10
    for i in range(3, len(seen)):
        assert np.array_equal(seen[i], pushers[i - 3]), i
    assert all(np.array_equal(s, pushers[0]) for s in seen[:3])       # the first observation until then
    assert fresh["success"] and late["success"] and late["time_s"] > fresh["time_s"], (fresh, late)
    assert late_expert.stats["plans"] > 0 and not late_expert.done   # the wrapped expert's
    late_expert.expert.done = True
    assert late_expert.done
    # a world reset under it (no reset() call, as the teleop node keeps one expert): fresh start
    seen.clear(), pushers.clear()
    world.reset(1)
    for _ in range(2):
        late_expert.act(world.task_state(), world.tcp_pose(), np.array(world.tcp_pose()[:2]))
    assert np.array_equal(seen[-1], pushers[0])
    # from teleop_node's parameters: seconds at its rate, in whole steps
    opts = expert_options({"task": "pusht", "rate_hz": 10.0, "expert_obs_delay_s": 0.3})
    assert opts["obs_delay_steps"] == 3
    assert isinstance(make_expert("pusht", MAPPING, 0.25, DT, 0, **opts), DelayedObservations)
    assert not isinstance(make_expert("reach", MAPPING, 0.25, DT, 0), DelayedObservations)
    with pytest.raises(SystemExit):
        main(["--task", "reach", "--episodes", "1", "--obs-delay-steps", "-1"])
