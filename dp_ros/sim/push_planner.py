"""Push-T push planning for the scripted PushTExpert: which push to make and how the pusher gets there.

- PushPlanner samples push primitives (contact point on a T face, push direction, push length),
  simulates each from the current block pose on a private copy of the Push-T physics, and ranks
  them (with some randomness) by how close they bring the T's outline to the goal.
- _Router finds the pusher's collision-free travel around the block to a push's start (visibility
  graph around the inflated T).
Task coordinates are the task plane's units (0..512, x right, y down), see TaskPlaneMapping.
"""

import numpy as np
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.prepared import prep

from .pusht import PushTTask

# The T's outline in its body frame (gym-pusht's add_tee, scale 30): bar on top, stem down.
T_OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)],
                     dtype=float)
_T_POLY = Polygon(T_OUTLINE)
PUSHER_RADIUS = 15.0


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def t_points(pose, local=T_OUTLINE):
    """Body-frame points -> task units for a block pose (x, y, theta) (pymunk's rotation)."""
    return np.asarray(local) @ _rot(pose[2]).T + np.asarray(pose[:2], dtype=float)


def pose_error(pose, goal):
    """Mean distance (task units) between the T's outline corners at pose and at goal."""
    return float(np.linalg.norm(t_points(pose) - t_points(goal), axis=1).mean())


def _place(poly, pose):
    c, s = np.cos(pose[2]), np.sin(pose[2])
    return affinity.affine_transform(poly, [c, -s, s, c, float(pose[0]), float(pose[1])])


class PushPlanner:
    """Samples push primitives and scores them by simulating them on a private PushTTask.

    A primitive is (contact point on a T face, push direction within the friction cone around the
    inward normal, push length). The block is at rest whenever it is not pushed (gym-pusht's space
    has damping 0, so pymunk zeroes its velocity every step), so a clone from (pusher, block pose)
    via set_state is exact up to the contact solver's warm start: quasi-static planning is sound.
    """

    def __init__(self, rng, n_samples=40, n_refine=20, n_continue=10, physics_dt=0.01, sim_speed=300.0,
                 standoff=6.0, bounds=(14.0, 498.0)):
        self.rng = rng
        self.n_samples, self.n_refine, self.n_continue = int(n_samples), int(n_refine), int(n_continue)
        self.physics_dt = float(physics_dt)
        self.sim_step = float(sim_speed) * self.physics_dt  # pusher travel per physics substep
        self.standoff = float(standoff)
        self.lo, self.hi = float(bounds[0]), float(bounds[1])
        self.sim = PushTTask(pusher_tracking="kinematic", physics_dt=physics_dt)
        a, b = T_OUTLINE, np.roll(T_OUTLINE, -1, axis=0)
        edge = b - a
        self._face_a, self._face_edge = a, edge
        self._face_len = np.linalg.norm(edge, axis=1)
        # The outline runs counter-clockwise (interior on the left), so the outward normal is (ey, -ex).
        self._face_n = np.stack([edge[:, 1], -edge[:, 0]], axis=1) / self._face_len[:, None]
        self.rollouts = 0

    # -- simulation --------------------------------------------------------------------------
    def rollout(self, start, u, length, block_pose):
        """Block pose after the pusher moves from start along unit u for length units."""
        sim = self.sim
        sim.set_state(start, block_pose)
        n = max(1, int(np.ceil(length / self.sim_step)))
        for k in range(1, n + 1):
            sim.step(start + u * (length * k / n), self.physics_dt)
        self.rollouts += 1
        return sim.block_pose

    # -- sampling ----------------------------------------------------------------------------
    def _contact_candidates(self, n, err, block_pose, faces=None, ts=None, phis=None, lengths=None):
        rng = self.rng
        if faces is None:
            faces = rng.choice(len(self._face_len), size=n, p=self._face_len / self._face_len.sum())
            ts = rng.uniform(0.03, 0.97, n)
            phis = rng.uniform(-0.6, 0.6, n)  # friction coefficient 1: cone of +-45 deg, stay inside
            lmax = float(np.clip(2.0 * err + 15.0, 15.0, 160.0))
            lengths = np.exp(rng.uniform(np.log(3.0), np.log(lmax), n))
        R = _rot(block_pose[2])
        c = (self._face_a[faces] + ts[:, None] * self._face_edge[faces]) @ R.T + block_pose[:2]
        nrm = self._face_n[faces] @ R.T
        cp, sp = np.cos(phis), np.sin(phis)
        inward = -nrm
        u = np.stack([cp * inward[:, 0] - sp * inward[:, 1], sp * inward[:, 0] + cp * inward[:, 1]], axis=1)
        touch = c + PUSHER_RADIUS * nrm
        start = touch - self.standoff * u
        return [dict(kind="contact", face=int(f), t=float(t), phi=float(ph), length=float(L),
                     start=s, u=uu, push=float(L) + self.standoff)
                for f, t, ph, L, s, uu in zip(faces, ts, phis, lengths, start, u)]

    def _continue_candidates(self, n, err, pusher, block_poly):
        """Keep pushing from where the pusher is (already at the block): no travel needed."""
        rng = self.rng
        if n <= 0 or block_poly.distance(Point(pusher)) > PUSHER_RADIUS + 4.0:
            return []
        nearest = np.array(block_poly.exterior.interpolate(block_poly.exterior.project(Point(pusher))).coords[0])
        inward = nearest - pusher
        if np.linalg.norm(inward) < 1e-6:
            return []
        base = np.arctan2(inward[1], inward[0])
        out = []
        lmax = float(np.clip(2.0 * err + 15.0, 15.0, 160.0))
        for _ in range(n):
            a = base + rng.uniform(-0.7, 0.7)
            u = np.array([np.cos(a), np.sin(a)])
            L = float(np.exp(rng.uniform(np.log(3.0), np.log(lmax))))
            out.append(dict(kind="continue", start=pusher.copy(), u=u, length=L, push=L))
        return out

    # -- planning ----------------------------------------------------------------------------
    def plan(self, block_pose, pusher, goal_pose, temperature=1.0, travel_weight=0.012,
             length_weight=0.004):
        """Best-ish primitive: dict with start, u, push (length), predicted pose, score; or None."""
        block_pose = np.asarray(block_pose, dtype=float)
        pusher = np.asarray(pusher, dtype=float)
        err = pose_error(block_pose, goal_pose)
        block_poly = _place(_T_POLY, block_pose)
        prepared = prep(block_poly.buffer(PUSHER_RADIUS + 1.5, join_style="mitre"))

        def evaluate(cands):
            done = []
            for cnd in cands:
                s = cnd["start"]
                if cnd["kind"] == "contact":
                    if not (self.lo <= s[0] <= self.hi and self.lo <= s[1] <= self.hi):
                        continue
                    if prepared.contains(Point(s)):  # the disc would already overlap the T there
                        continue
                end = s + cnd["u"] * cnd["push"]
                if not (self.lo <= end[0] <= self.hi and self.lo <= end[1] <= self.hi):
                    continue
                pose = self.rollout(s, cnd["u"], cnd["push"], block_pose)
                cnd["pose"] = pose
                cnd["error"] = pose_error(pose, goal_pose)
                travel = 0.0 if cnd["kind"] == "continue" else float(np.linalg.norm(s - pusher))
                cnd["score"] = cnd["error"] + travel_weight * travel + length_weight * cnd["push"]
                done.append(cnd)
            return done

        cands = evaluate(self._contact_candidates(self.n_samples, err, block_pose)
                         + self._continue_candidates(self.n_continue, err, pusher, block_poly))
        # Refine around the best contact pushes (a one-step cross-entropy update).
        elite = sorted([c for c in cands if c["kind"] == "contact"], key=lambda c: c["score"])[:4]
        if elite and self.n_refine > 0:
            rng = self.rng
            pick = rng.integers(0, len(elite), self.n_refine)
            faces = np.array([elite[i]["face"] for i in pick])
            ts = np.clip([elite[i]["t"] + rng.normal(0, 0.06) for i in pick], 0.03, 0.97)
            phis = np.clip([elite[i]["phi"] + rng.normal(0, 0.12) for i in pick], -0.6, 0.6)
            lengths = np.clip([elite[i]["length"] * np.exp(rng.normal(0, 0.25)) for i in pick], 2.0, 200.0)
            cands += evaluate(self._contact_candidates(0, err, block_pose, faces, ts, phis, lengths))
        if not cands:
            return None
        scores = np.array([c["score"] for c in cands])
        # Softmax choice among the good ones: varied demonstrations, still (nearly) greedy.
        temp = temperature * (0.04 * err + 0.15)
        w = np.exp(-(scores - scores.min()) / max(temp, 1e-6))
        order = np.argsort(scores)[:6]
        p = w[order] / w[order].sum()
        ranked = [cands[i] for i in self.rng.choice(order, size=len(order), replace=False, p=p)]
        for c in ranked:
            c["error_before"] = err
        return ranked


class _Router:
    """Collision-free travel for the pusher disc around the T (visibility graph on an inflated T)."""

    def __init__(self, bounds=(14.0, 498.0)):
        self.lo, self.hi = float(bounds[0]), float(bounds[1])

    def _inside(self, p):
        return self.lo <= p[0] <= self.hi and self.lo <= p[1] <= self.hi

    def route(self, pusher, start, u, block_pose, margin):
        """Waypoints from pusher to start (the pre-contact point), ending with a straight run-in
        along u; None if there is none."""
        block = _place(_T_POLY, block_pose)
        clear = PUSHER_RADIUS + 2.0  # what the pusher centre must keep from the T while travelling
        tight = prep(block.buffer(clear, join_style="mitre"))
        keep_out = block.buffer(PUSHER_RADIUS + margin, join_style="mitre")
        ring = block.buffer(PUSHER_RADIUS + margin + 3.0, join_style="mitre")
        keep_out_p = prep(keep_out)

        # Direct when the straight line is clear.
        if not tight.intersects(LineString([pusher, start])) or np.linalg.norm(start - pusher) < 1e-6:
            return [pusher, start]
        # Run-in: back off from start against u until outside the keep-out zone.
        run_in = None
        for back in np.arange(4.0, 220.0, 4.0):
            q = start - u * back
            if not self._inside(q):
                break
            if not keep_out_p.contains(Point(q)):
                run_in = q
                break
        if run_in is None or tight.intersects(LineString([run_in, start])):
            return None
        # Leave: if the pusher is close to the block, step out to the ring first.
        path_head = [pusher]
        src = pusher
        if keep_out_p.contains(Point(pusher)):
            ext = ring.exterior
            src = np.array(ext.interpolate(ext.project(Point(pusher))).coords[0])
            path_head.append(src)
        nodes = [src, run_in] + [np.array(p) for p in ring.exterior.coords[:-1] if self._inside(p)]
        n = len(nodes)
        INF = np.inf
        dist = np.full(n, INF)
        prev = np.full(n, -1)
        dist[0] = 0.0
        todo = set(range(n))
        while todo:
            i = min(todo, key=lambda k: dist[k])
            if dist[i] == INF or i == 1:
                break
            todo.remove(i)
            for j in todo:
                d = dist[i] + np.linalg.norm(nodes[i] - nodes[j])
                if d < dist[j] and not keep_out_p.intersects(LineString([nodes[i], nodes[j]])):
                    dist[j], prev[j] = d, i
        if dist[1] == INF:
            return None
        chain, k = [], 1
        while k != -1:
            chain.append(nodes[k])
            k = prev[k]
        return path_head + chain[::-1][1:] + [start]
