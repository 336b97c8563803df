"""`dp-ros show --rerun FILE.rrd`: the episode as a rerun recording (images, TCP pose, targets,
commands, the per-step series) on one timeline, "time" in seconds from the episode's start.

rerun-sdk is in requirements.txt; nothing else in dp_ros needs it, so an environment without it
(installed by other means) still runs everything else: this raises MissingRerun with the fix."""

from __future__ import annotations

from pathlib import Path

from dp_ros.viz.episode_view import EpisodeView

TIMELINE = "time"


class MissingRerun(RuntimeError):
    pass


def _rerun():
    try:
        import rerun
    except ImportError:
        raise MissingRerun("--rerun needs rerun-sdk, which is not installed: pip install -r requirements.txt "
                           "(or `make setup`), which pins rerun-sdk") from None
    return rerun


def write_rrd(view: EpisodeView, path) -> dict:
    """Write the recording; returns {"path", "entities": {entity path: rows logged}}."""
    rr = _rerun()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = rr.RecordingStream("dp_ros_episode")
    rec.save(str(path))
    counts = {}

    def log(entity, t, archetype):
        rec.set_time(TIMELINE, duration=float(t))
        rec.log(entity, archetype)
        counts[entity] = counts.get(entity, 0) + 1

    for cam, (ts, images) in view.frames.items():
        for t, img in zip(ts, images):
            log(f"camera/{cam}", t, rr.Image(img))
    for name, (ts, poses) in view.poses.items():
        for t, p in zip(ts, poses):
            if name == "tcp":    # the arm's pose as a frame: position and orientation
                log("world/tcp", t, rr.Transform3D(translation=p[:3], quaternion=rr.Quaternion(xyzw=p[3:7])))
            else:
                log(f"world/{name}", t, rr.Points3D([p[:3]], radii=0.004))
    for group in (view.state, view.action):
        for name, s in group.items():
            key = name.replace(" ", "_").replace("(", "").replace(")", "")
            for d, label in enumerate(s.labels):
                for t, v in zip(s.t, s.values[:, d]):
                    log(f"plot/{key}/{label}", t, rr.Scalars([float(v)]))
    if view.grid is not None:
        for k, t in enumerate(view.grid):
            log("plot/step", t, rr.Scalars([float(k)]))
    rec.flush()
    del rec     # closes the file sink
    return {"path": str(path), "entities": counts}


def read_rrd_counts(path) -> dict:
    """Rows per entity path, read back with rerun's own reader (what the tests check)."""
    _rerun()
    from rerun.chunk import RrdReader
    counts = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        entity = chunk.entity_path.lstrip("/")
        if not entity.startswith("__"):          # rerun's own properties
            counts[entity] = counts.get(entity, 0) + chunk.num_rows
    return counts
