"""What the tools show (issue 16), each output made and read back: progress bars, rollout videos
and contact sheets (a short sim episode, and one through `dp-ros eval`), `dp-ros show`'s PNG and
rerun recording of a bag and of a store episode, and the training figures."""

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dp_ros.graph import default_config, load_params
from dp_ros.sim.reach import _PUSHER
from dp_ros.sim.world import SimWorld, TaskPlaneMapping
from dp_ros.viz.progress import progress_bar, wait_with_bar
from dp_ros.viz.rollout import PixelFrame, RolloutTrace, RolloutVideos
from dp_ros.viz.video import read_mp4

ROOT = Path(__file__).resolve().parents[1]
WORLD = load_params(default_config())["sim_world_node"]
HW = (96, 96)


def png_size(path):
    img = cv2.imread(str(path))
    assert img is not None, f"{path} is not a readable image"
    return img.shape[:2]


# --- progress ---------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_shows_count_and_rate_on_a_terminal_only(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    for _ in progress_bar(range(3), desc="episodes", unit="ep", mininterval=0):
        pass
    assert "3/3" in term.getvalue() and "ep/s" in term.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    list(progress_bar(range(3), enabled=False))            # --no-progress
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    list(progress_bar(range(3)))                            # not a terminal
    assert quiet.getvalue() == "" and piped.getvalue() == ""


def test_measurement_window_bar_counts_seconds_on_a_terminal_only(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    wait_with_bar(0.2, desc="measuring", step_s=0.05)
    assert "measuring" in term.getvalue() and "0.2/0.2 s" in term.getvalue()
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    wait_with_bar(0.05)
    assert piped.getvalue() == ""


@pytest.mark.parametrize("module,required", [("dp_ros.cli.faults", []), ("dp_ros.cli.bench_servo", []),
                                             ("dp_ros.cli.bench_pipeline", []), ("dp_ros.cli.record", []),
                                             ("dp_ros.cli.deploy", []), ("dp_ros.cli.eval", ["--checkpoint", "x"])])
def test_long_commands_take_no_progress(module, required):
    import importlib
    assert importlib.import_module(module).parser().parse_args(required + ["--no-progress"]).no_progress


def test_bench_without_a_name_lists_the_benches(capsys):
    from dp_ros.cli import bench
    assert bench.main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert bench.main([]) == 2
    assert capsys.readouterr().out == listing
    for name, (_, help_text) in bench.BENCHES.items():
        assert name in listing and help_text.split()[0] in listing
    with pytest.raises(SystemExit) as exc:
        bench.main(["no-such-bench"])
    assert exc.value.code == 2


# --- rollout videos ---------------------------------------------------------------------------
def world():
    mapping = TaskPlaneMapping(WORLD["task_xy_min"], WORLD["task_xy_max"])
    return SimWorld("reach", mapping, ["top"], HW, seed=5, home_pose=WORLD["home_pose"])


def test_pixel_frame_puts_the_tcp_on_the_pusher_in_the_top_image():
    w = world()
    pixels = PixelFrame(WORLD["task_xy_min"], WORLD["task_xy_max"], HW)
    for xy in ([0.45, -0.1], [0.62, 0.12]):
        w.servo(np.r_[xy, w.tcp_pose()[2:]])
        for _ in range(100):
            w.step(0.01)
        img = w.render("top").astype(int)
        mask = np.abs(img - np.array(_PUSHER)).sum(-1) < 60
        ys, xs = np.nonzero(mask)
        assert mask.sum() > 3
        assert np.allclose(pixels(w.tcp_pose()[:2])[0], [xs.mean(), ys.mean()], atol=1.5)


def sim_rollout(n_frames=30, fps=20.0):
    """A short sim episode fed to a RolloutTrace as the monitor would: frames as rendered, a chunk
    every 0.1 s (a straight line ahead of the arm), the streamed waypoints, the coverage."""
    w = world()
    trace = RolloutTrace(["top"])
    trace.start()
    t0 = 1_800_000_000_000_000_000
    goal = np.array([0.45, 0.12])
    dt_ns = int(1e9 / fps)
    for k in range(n_frames):
        t = t0 + k * dt_ns
        if k % 2 == 0:
            times = t + np.arange(1, 9) * 100_000_000
            xy = w.tcp_pose()[:2] + np.outer(np.arange(1, 9) / 8, goal - w.tcp_pose()[:2])
            trace.add_chunk(t, times, xy)
            trace.add_waypoints(times[:4], xy[:4])
            w.servo(np.r_[xy[0], w.tcp_pose()[2:]])
        w.step(1.0 / fps)
        trace.add_frame("top", t, w.render("top"))
        trace.add_coverage(t, w.task.coverage)
    trace.stop()
    trace.add_frame("top", t0 + n_frames * dt_ns, w.render("top"))    # stopped: not kept
    return trace.collect(), w


def test_rollout_video_and_contact_sheet_read_back(tmp_path):
    data, _ = sim_rollout(n_frames=30)
    pixels = PixelFrame(WORLD["task_xy_min"], WORLD["task_xy_max"], HW)
    videos = RolloutVideos(tmp_path, pixels, fps=20.0)
    episodes = [{"episode": i, "success": i == 0, "final_coverage": 0.5} for i in range(3)]
    infos = [videos.add(data, ep) for ep in episodes]
    sheet = videos.finish()

    frames, stream = read_mp4(infos[0]["path"])
    assert frames.shape == (30, 384, 384, 3) == (infos[0]["frames"], infos[0]["height"], infos[0]["width"], 3)
    assert stream == {"codec": "h264", "pix_fmt": "yuv420p", "fps": 20.0}
    # the last chunk is drawn where the task plane puts it: orange at its first waypoint
    last_chunk = data.chunks[-1][2]
    u, v = (pixels(last_chunk[:1], scale=4)[0]).round().astype(int)
    patch = frames[-1][v - 2:v + 3, u - 2:u + 3].reshape(-1, 3).astype(int)
    assert (np.abs(patch - [255, 140, 0]).sum(-1) < 90).any()
    assert png_size(sheet["path"]) == (sheet["height"], sheet["width"]) == (4 + 192 + 18 + 4, 4 + 3 * (192 + 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "contact_sheet.png", "episode_000.mp4", "episode_001.mp4", "episode_002.mp4"]


def test_eval_writes_a_video_per_episode_through_the_graph(tmp_path):
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "dp_ros.cli", "eval", "--checkpoint", str(ROOT / "models" / "reach_image_policy"),
         "--episodes", "1", "--episode-timeout", "6", "--out", str(out), "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    printed = json.loads(result.stdout[result.stdout.index("\n{") + 1:result.stdout.index("\n}") + 2])
    assert "videos" not in printed and "\r" not in result.stderr       # stdout JSON as before; no bar
    summary = json.loads(out.read_text())
    video = summary["episodes"][0]["video"]
    frames, stream = read_mp4(video["path"])
    # the camera streams at camera_fps while the episode runs (plus the 0.5 s before the start)
    duration = summary["episodes"][0]["duration_s"]
    assert frames.shape == (video["frames"], 384, 384, 3) and stream["codec"] == "h264"
    assert 0.5 * WORLD["camera_fps"] * duration <= video["frames"] <= WORLD["camera_fps"] * (duration + 2)
    assert Path(video["path"]).parent == tmp_path / "logs" / "videos"
    assert png_size(summary["videos"]["contact_sheet"]) == (218, 200)


# --- dp-ros show ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bag_and_store(tmp_path_factory):
    from test_data_common import record_episode

    from dp_ros.data import convert
    tmp = tmp_path_factory.mktemp("show")
    bag, truth = record_episode(tmp / "demos", "episode_0000", duration_s=2.0, hw=HW)
    assert convert.main([str(bag), "--out", str(tmp / "demos.zarr"), "--no-progress"]) == 0
    return bag, tmp / "demos.zarr", truth


def run_show(args, capsys):
    from dp_ros.cli.show import main
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


def test_show_bag_png_and_rerun(bag_and_store, tmp_path, capsys):
    bag, _, truth = bag_and_store
    code, out = run_show([bag, "--out", tmp_path / "ep.png", "--rerun", tmp_path / "ep.rrd"], capsys)
    assert code == 0, out.err              # rerun-sdk is in requirements.txt: no skip
    res = json.loads(out.out)
    assert res["kind"] == "bag" and res["steps"] >= 18
    assert png_size(tmp_path / "ep.png") == (res["png"]["height"], res["png"]["width"]) == (800, 1200)
    from dp_ros.viz.rerun_export import read_rrd_counts
    counts = read_rrd_counts(tmp_path / "ep.rrd")
    assert counts["camera/top"] == truth["count"]["/camera/top/image_raw"]
    assert counts["world/tcp"] == truth["count"]["/robot/tcp_pose"]
    assert counts["world/target"] == truth["count"]["/servo/target_pose"]
    assert counts["plot/step"] == res["steps"] == counts["plot/action_step/x"]


def test_show_store_episode(bag_and_store, tmp_path, capsys):
    _, store, _ = bag_and_store
    code, out = run_show([store, "--episode", "0", "--out", tmp_path / "st.png"], capsys)
    assert code == 0, out.err
    res = json.loads(out.out)
    from dp_ros.data.replay_buffer import ReplayBuffer
    assert res["kind"] == "store" and res["steps"] == int(ReplayBuffer.open(store).episode_lengths[0])
    assert png_size(tmp_path / "st.png") == (800, 1200)
    code, out = run_show([store, "--episode", "7"], capsys)
    assert code == 2 and "1 episodes" in out.err


def test_show_without_rerun_says_how_to_install_it(bag_and_store, tmp_path, capsys, monkeypatch):
    bag, _, _ = bag_and_store
    monkeypatch.setitem(sys.modules, "rerun", None)         # import rerun -> ImportError
    code, out = run_show([bag, "--out", tmp_path / "ep.png", "--rerun", tmp_path / "ep.rrd"], capsys)
    assert code == 3 and "rerun-sdk" in out.err and "requirements.txt" in out.err
    assert (tmp_path / "ep.png").is_file() and not (tmp_path / "ep.rrd").exists()


# --- training figures -------------------------------------------------------------------------
def test_training_figures_from_metrics(tmp_path):
    from dp_ros.train.plots import training_figures
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "train/loss": 1.0 / s, "train/lr": 1e-4} for s in range(1, 21)]
    rows += [{"step": s, "val/action_mse": 0.1 / s, "val/loss": 0.5 / s, "val/best_action_mse": 0.1 / s}
             for s in (10, 20)]
    metrics.write_text("\n".join(json.dumps(r) for r in rows))
    written = training_figures(metrics, tmp_path / "figs")
    assert [Path(p).name for p in written] == ["training_loss.png", "validation.png"]   # no rollout logged
    for p in written:
        assert png_size(p) == (450, 800)
    metrics.write_text(metrics.read_text() + "\n" + json.dumps({"step": 20, "rollout/success_rate": 0.5}))
    assert Path(training_figures(metrics, tmp_path / "figs")[-1]).name == "rollout_score.png"


def test_rollout_scores_logged_only_to_tensorboard_get_their_figure(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from dp_ros.train.plots import read_run_scalars, training_figures
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (1, 2, 3)))
    assert [Path(p).name for p in training_figures(run / "metrics.jsonl", run / "figs")] == ["training_loss.png"]
    with SummaryWriter(str(run / "tb")) as w:          # the trainer's layout: RUN_DIR/tb
        for s in (1, 2, 3):
            w.add_scalar("train/loss", 1.0 / s, s)      # also in metrics.jsonl: counted once
        for s, (cov, rate) in {2: (0.4, 0.0), 3: (0.7, 0.5)}.items():
            w.add_scalar("rollout/mean_max_coverage", cov, s)
            w.add_scalar("rollout/success_rate", rate, s)
    rows = read_run_scalars(run / "metrics.jsonl")
    assert sum("train/loss" in r for r in rows) == 3
    assert [(r["step"], r["rollout/success_rate"]) for r in rows if "rollout/success_rate" in r] == [(2, 0.0), (3, 0.5)]
    written = training_figures(run / "metrics.jsonl", run / "figs")
    assert [Path(p).name for p in written] == ["training_loss.png", "rollout_score.png"]
    assert png_size(written[-1]) == (450, 800)


def test_training_ends_with_figures_beside_the_checkpoints(tmp_path):
    from test_train_common import make_store, tiny_config

    from dp_ros.train.trainer import Trainer
    store = make_store(tmp_path / "store.zarr", n_episodes=5, length=16)
    tr = Trainer(tiny_config(store, "training.max_steps=3", "training.eval_every=3"), tmp_path / "run",
                 progress=False)
    summary = tr.fit()
    tr.close()
    ckpt = tmp_path / "run" / "checkpoints"
    assert summary["figures"] == [str(ckpt / "training_loss.png"), str(ckpt / "validation.png")]
    assert all(png_size(p) == (450, 800) for p in summary["figures"])
