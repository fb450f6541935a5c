"""``nba bench resilience``: a real ``bentoml serve`` on a real Redis online store, the store killed under load, the server killed during feedback.

Two experiments against a private ``redis-server`` (never the shared one) and the benchmark world
of ``nba bench serve``:

- **Online store killed under load.** Steady single-HCP ``/recommend`` load at a fixed rate; Redis
  is killed (-9) and restarted with its data (the model must come back), then killed and restarted
  empty (every answer must be flagged degraded, never "no suggestions"), then reloaded. Printed:
  5xx count, max latency, time from the kill to the first flagged answer, answers left unflagged
  1 s after the kill, time from the store's return to the first model answer, empty store flagged.
- **Crash during feedback.** ``/feedback`` posts from several clients; the server is killed (-9)
  part-way, restarted, and every post replayed. Printed: acknowledged posts lost, duplicated rows,
  and HCPs whose online decision counts differ from the audit trail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from nba.servers import free_port, kill_tree

DECISIONS = ("accepted", "dismissed", "done")


@contextlib.contextmanager
def _fds_to(path: Path):
    """While inside, file descriptors 1 and 2 write to ``path`` (what a child started here inherits)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class PrivateRedis:
    """A ``redis-server`` of our own on a free loopback port, to kill and restart at will (no persistence unless ``save`` is called)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server is not on PATH: the resilience benchmark needs a private Redis to kill (apt-get install redis-server)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        """A redis-py client of the server."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=5)

    def start(self, *, with_data: bool = True, timeout_s: float = 10.0) -> float:
        """Start the server (loading the last ``save`` when ``with_data``) and wait until it answers; returns the wall time (time.time()) it was launched.

        The launch, not the first answer of our own poll: clients may reach it before the poll does,
        so outage windows end there and "back after" times are measured from there (conservative).
        """
        dump = self.dir / "dump.rdb"
        if not with_data and dump.exists():
            dump.unlink()
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--dbfilename",
            "dump.rdb",
            "--protected-mode",
            "no",
        ]
        launched = time.time()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if self.client().ping():
                    return launched
            except Exception:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout_s:g} s")

    def save(self) -> None:
        """Write the data set to disk now (what a restart ``with_data`` loads)."""
        self.client().save()

    def kill(self) -> float:
        """SIGKILL the server; returns the wall time of the kill."""
        t = time.time()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return t

    def stop(self) -> None:
        """Stop the server if it runs."""
        self.kill()


def redis_feature_copy(features_cfg: Any, workspace: Path, redis_url: str, *, project: str | None = None) -> tuple[Any, Path]:
    """A copy of a built feature store whose online store is Redis at ``redis_url``: sources copied, applied, fully materialised.

    Returns (config, YAML path). ``project`` (default the source's) prefixes every Redis key,
    so copies under different projects share a server without touching each other's rows.
    """
    import yaml

    from features import apply, materialize, open_store

    workspace = Path(workspace).resolve()
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    shutil.copytree(features_cfg.sources_dir, workspace / "sources")
    cfg = features_cfg.model_copy(
        update={
            "workspace_dir": workspace,
            "project": project or features_cfg.project,
            "online_store": features_cfg.online_store.model_copy(update={"type": "redis", "url": redis_url}),
        }
    )
    with contextlib.redirect_stdout(sys.stderr):  # Feast prints its progress on stdout
        apply(cfg)
        materialize(cfg, store=open_store(cfg), incremental=False)
    path = workspace / "features.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return cfg, path


def reload_online(features_cfg: Any) -> None:
    """Materialise the whole store again (after Redis came back empty)."""
    from features import materialize, open_store

    with contextlib.redirect_stdout(sys.stderr):
        materialize(features_cfg, store=open_store(features_cfg), incremental=False)


@dataclass
class Shot:
    """One request of the load generator."""

    sent: float
    done: float = 0.0
    status: int = 0
    degraded: bool = False
    model: bool = False  # some suggestion came from the model
    suggestions: int = 0
    notes: list[str] = field(default_factory=list)


def _request(base: str, key: str, path: str, body: dict, timeout_s: float) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json", "X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except Exception:  # timed out or refused: counted as status 0
        return 0, {}


class Load:
    """Open-loop single-HCP /recommend load at a fixed rate from a thread pool, recording every shot."""

    def __init__(self, base: str, key: str, ids: list[str], as_of: str, rate_per_s: float, seed: int, timeout_s: float = 10.0) -> None:
        self.base, self.key, self.ids, self.as_of = base, key, ids, as_of
        self.period = 1.0 / rate_per_s
        self.rng = np.random.default_rng(seed)
        self.timeout_s = timeout_s
        self.shots: list[Shot] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(16)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, hcp: str, shot: Shot) -> None:
        status, body = _request(self.base, self.key, "/recommend", {"hcp_ids": [hcp], "as_of": self.as_of}, self.timeout_s)
        shot.done, shot.status = time.time(), status
        if status == 200:
            sugg = [s for r in body.get("results", []) for s in r.get("suggestions", [])]
            shot.suggestions = len(sugg)
            shot.degraded = bool(body.get("degraded")) and all(s.get("degraded") for s in sugg)
            shot.model = any(s.get("policy") in ("model", "explore") for s in sugg)
            shot.notes = list(body.get("notes", []))

    def _run(self) -> None:
        nxt = time.time()
        while not self._stop.is_set():
            shot = Shot(sent=time.time())
            self.shots.append(shot)
            self._pool.submit(self._one, self.ids[int(self.rng.integers(len(self.ids)))], shot)
            nxt += self.period
            time.sleep(max(0.0, nxt - time.time()))

    def start(self) -> Load:
        """Begin sending."""
        self._thread.start()
        return self

    def stop(self) -> list[Shot]:
        """Stop sending, wait for answers; returns every shot."""
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        return self.shots


def outage_figures(shots: list[Shot], kill_t: float, back_t: float, empty_t: float, empty_end_t: float, flag_within_s: float = 1.0) -> dict[str, Any]:
    """Figures of the load around an outage: 5xx, latency, first flagged answer, unflagged answers, model back, empty store flagged."""
    done = [s for s in shots if s.done]
    lat = [(s.done - s.sent) * 1e3 for s in done]
    in_outage = [s for s in done if kill_t <= s.sent < back_t]
    flagged = sorted(s.done for s in in_outage if s.status == 200 and s.degraded)
    # Answers to requests sent 1 s after the kill and before the return that were not flagged.
    late = [s for s in in_outage if s.sent >= kill_t + flag_within_s and s.status == 200 and not s.degraded]
    model_back = sorted(s.done for s in done if s.sent >= back_t and s.model and s.sent < empty_t)
    empty = [s for s in done if empty_t <= s.sent < empty_end_t and s.status == 200]
    empty_unflagged = [s for s in empty if not s.degraded]
    return {
        "requests": len(shots),
        "answered_200": sum(s.status == 200 for s in done),
        "http_5xx_count": sum(s.status >= 500 for s in done),
        "client_timeouts_or_refused": sum(s.status == 0 for s in done) + (len(shots) - len(done)),
        "max_latency_ms": round(max(lat), 1) if lat else None,
        "p99_latency_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
        "outage_requests": len(in_outage),
        "first_flagged_after_kill_s": round(flagged[0] - kill_t, 3) if flagged else None,
        "unflagged_after_1s_count": len(late),
        "model_back_after_return_s": round(model_back[0] - back_t, 3) if model_back else None,
        "empty_store_requests": len(empty),
        "empty_store_unflagged_count": len(empty_unflagged),
        "empty_store_empty_unflagged_count": sum(s.suggestions == 0 for s in empty_unflagged),
        "empty_store_flagged": bool(empty) and not empty_unflagged,
    }


def online_decision_counts(store: Any, hcp_ids: list[str]) -> dict[str, dict[str, int]]:
    """HCP -> decision -> the online store's ``suggestions_<decision>_90d``."""
    from features import get_online_features

    frame = get_online_features(store, hcp_ids)
    return {h: {d: int(frame[f"suggestions_{d}_90d"].iloc[i]) for d in DECISIONS} for i, h in enumerate(hcp_ids)}


def expected_decision_counts(features_cfg: Any, store: Any, audit_url: str, hcp_ids: list[str]) -> dict[str, dict[str, int]]:
    """HCP -> decision -> ``suggestions_<decision>_90d`` as the audit trail implies: the push's own computation over every stored outcome, not pushed."""
    from features import push_events
    from features.catalog import hcp_views
    from serving.audit import AuditTrail
    from serving.feedback import outcome_events

    views = [v for v in hcp_views(features_cfg) if v.pushable]
    audit = AuditTrail(audit_url)
    out = {}
    try:
        for h in hcp_ids:
            rows = push_events(features_cfg, list(outcome_events(audit.feedback_of(h))), store=store, dry_run=True)["rows"]
            out[h] = {d: int(_pushed_value(rows, views, f"suggestions_{d}_90d")) for d in DECISIONS}
    finally:
        audit.close()
    return out


def audit_decision_counts(audit_url: str) -> tuple[dict[str, dict[str, int]], int, int]:
    """(HCP -> decision -> feedback rows in the audit trail, feedback rows, distinct feedback ids)."""
    import sqlalchemy as sa

    engine = sa.create_engine(audit_url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT hcp_id, outcome, COUNT(*) FROM feedback GROUP BY hcp_id, outcome").all()
            total = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT feedback_id) FROM feedback").one()
    finally:
        engine.dispose()
    out: dict[str, dict[str, int]] = {}
    for h, outcome, c in rows:
        out.setdefault(h, dict.fromkeys(DECISIONS, 0))[outcome] = int(c)
    return out, int(total[0]), int(total[1])


def feedback_items(suggestions: list[tuple[str, str]], n: int, seed: int, now: datetime) -> list[dict[str, Any]]:
    """``n`` feedback posts on served (suggestion id, HCP) pairs: decisions only, stamped in the last hours (inside every window)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(suggestions), size=n)
    outcome = rng.integers(len(DECISIONS), size=n)
    start = now - timedelta(hours=2)
    return [
        {
            "feedback_id": f"fb-{seed}-{i}",
            "suggestion_id": suggestions[p][0],
            "outcome": DECISIONS[o],
            "reason": "other" if DECISIONS[o] == "dismissed" else None,
            "ts": (start + timedelta(milliseconds=i)).isoformat(),
        }
        for i, (p, o) in enumerate(zip(pick.tolist(), outcome.tolist()))
    ]


def run_resilience(
    workdir: Path,
    *,
    n_hcps: int,
    rate_per_s: float,
    outage_s: float,
    steady_s: float,
    feedback_posts: int,
    kill_after_share: float,
    seed: int,
    rebuild: bool,
    simulate: Callable[..., Any] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both experiments (module docstring); returns the figures."""
    from features import load_features_config
    from nba.configuration import load_config
    from serving.bench import BENCH_KEY, wait_ready
    from serving.cli import serve_process
    from serving.config import ServingConfig
    from serving.sandbox import AS_OF, build_world

    workdir = Path(workdir).resolve()
    marker = workdir / "world.json"
    if rebuild or not marker.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        if simulate is None:
            raise ValueError(f"{workdir}: no benchmark world yet and no simulator to build one (run `nba bench resilience`, which wires it)")
        progress(f"building a world of {n_hcps} HCPs (features, tiny champion)")
        w = build_world(workdir / "world", simulate=simulate, n_hcps=n_hcps, seed=seed)
        marker.write_text(json.dumps({"hcp_ids": w.hcp_ids, "serving_yaml": str(w.serving_yaml), "features_yaml": str(w.features_yaml)}))
    info = json.loads(marker.read_text())
    ids = info["hcp_ids"]
    redis = PrivateRedis(workdir / "redis")
    figures: dict[str, Any] = {"hcps_in_world": len(ids), "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    os.environ["NBA_API_KEYS"] = f"bench:{BENCH_KEY}"
    proc = None
    try:
        redis.start(with_data=False)
        progress(f"private redis-server on port {redis.port}; materialising the world into it")
        fcfg, fyaml = redis_feature_copy(load_features_config(info["features_yaml"]), workdir / "redis_features", redis.url)
        redis.save()
        audit_db = workdir / "audit-resilience.db"
        for leftover in (audit_db, audit_db.with_name(audit_db.name + "-wal"), audit_db.with_name(audit_db.name + "-shm")):
            leftover.unlink(missing_ok=True)  # a stale WAL beside a new database reads as a disk I/O error
        overrides = {"audit_url": f"sqlite:///{audit_db}", "features_config": str(fyaml)}
        cfg = load_config(ServingConfig, "serving", info["serving_yaml"], overrides)
        port = free_port()
        base = f"http://127.0.0.1:{port}"

        def serve() -> subprocess.Popen:
            with _fds_to(workdir / "serve.log"):  # the server's log, kept for a post-mortem
                p = serve_process(Path(info["serving_yaml"]), overrides, "127.0.0.1", port)
            try:
                wait_ready(base, p)
            except Exception:  # never ready: stop it here, nobody else holds its handle
                from nba.servers import stop_group

                stop_group(p)
                raise
            return p

        progress("starting bentoml serve")
        proc = serve()
        as_of = AS_OF.isoformat()
        for h in ids[:5]:  # warm-up
            _request(base, BENCH_KEY, "/recommend", {"hcp_ids": [h], "as_of": as_of}, 30)

        # 1. Online store killed under load: killed, back with its data; killed, back empty; reloaded.
        progress(f"load at {rate_per_s:g} req/s: steady {steady_s:g} s, Redis killed for {outage_s:g} s, back with data, killed again, back empty")
        load = Load(base, BENCH_KEY, ids, as_of, rate_per_s, seed).start()
        time.sleep(steady_s)
        kill_t = redis.kill()
        time.sleep(outage_s)
        back_t = redis.start(with_data=True)
        time.sleep(max(steady_s, 6.0))  # the model must be back within 5 s
        redis.kill()
        time.sleep(1.0)
        empty_t = redis.start(with_data=False) + cfg.online_read.cooloff_s + 1.0  # the first probe after the cool-off finds it empty
        time.sleep(empty_t - time.time() + steady_s)
        empty_end_t = time.time()
        reload_online(fcfg)
        reload_t = time.time()
        time.sleep(steady_s)
        shots = load.stop()
        marks = {"kill": kill_t, "back": back_t, "empty": empty_t, "empty_end": empty_end_t, "reload": reload_t}
        (workdir / "shots.json").write_text(json.dumps({"marks": marks, "shots": [vars(s) for s in shots]}))  # for a post-mortem
        figures.update(outage_figures(shots, kill_t, back_t, empty_t, empty_end_t))
        reloaded = sorted(s.done for s in shots if s.sent >= reload_t and s.model)
        figures["model_back_after_reload_s"] = round(reloaded[0] - reload_t, 3) if reloaded else None
        figures.update(
            {
                "rate_per_s": rate_per_s,
                "outage_s": outage_s,
                "online_read_timeout_ms": cfg.online_read.read_timeout_ms,
                "circuit_cooloff_s": cfg.online_read.cooloff_s,
            }
        )

        # 2. Crash during feedback: kill -9 part-way through the posts, restart, replay them all.
        served: list[tuple[str, str]] = []
        for h in ids[: min(len(ids), 50)]:
            status, body = _request(base, BENCH_KEY, "/recommend", {"hcp_ids": [h], "as_of": as_of}, 30)
            served += [(s["suggestion_id"], r["hcp_id"]) for r in body.get("results", []) for s in r.get("suggestions", [])[:1]] if status == 200 else []
        # Stamped just before the server's clock (a sandbox pins it at the world's end): inside every window, never "in the future".
        clock = getattr(cfg, "fixed_clock", None)
        now = datetime.now(UTC) if clock is None else datetime.fromisoformat(str(clock)).astimezone(UTC)
        items = feedback_items(served, feedback_posts, seed, now)
        progress(f"{len(items)} /feedback posts from 4 clients; the server is killed (-9) after {kill_after_share:.0%} of them")
        acked: set[str] = set()
        answered: list[int] = []
        refusals: dict[int, str] = {}
        lock = threading.Lock()
        kill_at = max(1, int(len(items) * kill_after_share))

        def post(item: dict[str, Any]) -> int:
            status, body = _request(base, BENCH_KEY, "/feedback", item, 30)
            with lock:
                answered.append(status)
                if status == 200:
                    acked.add(item["feedback_id"])
                elif status:
                    refusals.setdefault(status, str(body)[:300])
            return status

        killed = threading.Event()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(lambda it: None if killed.is_set() else post(it), it) for it in items]
            while not killed.is_set():
                if len(answered) >= kill_at or all(f.done() for f in futures):
                    kill_tree(proc)  # the server and its workers (each in a session of its own), as a crash would
                    killed.set()
                time.sleep(0.005)
        proc.wait(timeout=30)
        if refusals:
            progress(f"refused feedback posts: {refusals}")
        acked_before = len(acked)
        progress(f"killed after {acked_before} acknowledged posts; restarting and replaying all {len(items)}")
        proc = serve()
        replay_status: list[int] = []
        with ThreadPoolExecutor(4) as pool:
            replay_status = list(pool.map(lambda it: _request(base, BENCH_KEY, "/feedback", it, 60)[0], items))
        in_audit, rows, distinct = audit_decision_counts(cfg.audit_url)
        stored_ids = _stored_feedback_ids(cfg.audit_url)
        hcps = sorted(in_audit)
        from features import open_store

        store = open_store(fcfg)
        online = online_decision_counts(store, hcps)
        expected = expected_decision_counts(fcfg, store, cfg.audit_url, hcps)
        mismatched = [h for h in hcps if online[h] != expected[h]]
        figures.update(
            {
                "feedback_posts": len(items),
                "feedback_acknowledged_before_kill": acked_before,
                "feedback_refused_before_kill": sum(0 < s != 200 for s in answered),
                "feedback_acknowledged_lost": len(acked - stored_ids),
                "feedback_duplicated": rows - distinct,
                "online_double_counted_hcps": sum(any(online[h][d] > expected[h][d] for d in DECISIONS) for h in hcps),
                "feedback_decisions_in_audit": sum(sum(c.values()) for c in in_audit.values()),
                "feedback_rows_after_replay": rows,
                "feedback_missing_after_replay": len({it["feedback_id"] for it in items} - stored_ids),
                "feedback_replay_non_200": sum(s != 200 for s in replay_status),
                "feedback_hcps": len(hcps),
                "online_differs_from_audit_hcps": len(mismatched),
                "online_equals_audit": not mismatched,
            }
        )
    finally:
        if proc is not None:
            from nba.servers import stop_group

            stop_group(proc, timeout_s=30)
        redis.stop()
    figures["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    figures["targets"] = {
        "http_5xx_count": 0,
        "max_latency_ms": 1000,
        "first_flagged_after_kill_s": 1.0,
        "unflagged_after_1s_count": 0,
        "model_back_after_return_s": 5.0,
        "empty_store_flagged": True,
        "feedback_acknowledged_lost": 0,
        "feedback_duplicated": 0,
        "online_equals_audit": True,
    }
    return figures


def _pushed_value(rows: dict[str, Any], views: list, name: str) -> float:
    """One feature of a single-HCP dry-run push (a packed view holds its features as one vector)."""
    for v in views:
        names = [f.name for f in v.features]
        if name in names and v.name in rows:
            df = rows[v.name]
            return float(df[v.vector_name].iloc[0][names.index(name)]) if v.packed else float(df[name].iloc[0])
    raise KeyError(f"{name}: in no pushable view")


def _stored_feedback_ids(audit_url: str) -> set[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(audit_url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.exec_driver_sql("SELECT feedback_id FROM feedback")}
    finally:
        engine.dispose()
