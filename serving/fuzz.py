"""Fuzzing the API from its own OpenAPI document (schemathesis does not install offline here).

Request bodies come from the documented JSON Schemas with hypothesis (types, enums, patterns via
``from_regex``, bounds, formats), and a share of them is mutated (a required field dropped, an
unknown one added, a value of the wrong type, deep nesting, NUL and non-ASCII text, raw bytes that
are not JSON). Every answer must be documented for its operation, never a 5xx, and its body must
validate against the documented schema (the response model for 200, the error object otherwise).
``run_fuzz`` returns one dict of figures (``nba bench fuzz`` prints it as its last line).
"""

from __future__ import annotations

import http.client
import json
import string
import time
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

MAX_ITEMS = 5  # arrays are kept short: the point is shapes and values, not load
API_OPERATIONS = ("/recommend", "/plan", "/feedback", "/feedback/batch")


def _resolve(schema: dict, defs: dict) -> dict:
    while "$ref" in schema:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def schema_strategy(schema: dict, defs: dict, anchor: datetime | None = None, hints: dict[str, list] | None = None) -> Any:
    """A hypothesis strategy of JSON values valid (mostly) under ``schema``.

    ``anchor`` biases date-times towards it (the server's clock); ``hints`` maps a property name to
    known values (real ids), drawn half the time for that property (or its array's items), so the
    fuzzer reaches past "unknown id" into the handlers' deeper paths.
    """
    from hypothesis import strategies as st

    hints = hints or {}
    s = _resolve(schema, defs)
    for key in ("anyOf", "oneOf"):
        if key in s:
            return st.one_of([schema_strategy(sub, defs, anchor, hints) for sub in s[key]])
    if "allOf" in s:
        return schema_strategy(s["allOf"][0], defs, anchor, hints)
    if "const" in s:
        return st.just(s["const"])
    if "enum" in s:
        return st.sampled_from(s["enum"])
    kind = s.get("type")
    if isinstance(kind, list):
        return st.one_of([schema_strategy({**s, "type": k}, defs, anchor) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=s.get("minimum", -(2**31)), max_value=s.get("maximum", 2**31))
    if kind == "number":
        return st.floats(min_value=s.get("minimum"), max_value=s.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "string":
        fmt = s.get("format")
        if fmt == "date":
            near = [st.dates(anchor.date() - timedelta(days=3), anchor.date() + timedelta(days=9))] if anchor else []
            return st.one_of(*near, st.dates(date(1, 1, 1), date(9999, 12, 31))).map(date.isoformat)
        if fmt == "date-time":
            zones = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5)), timezone(timedelta(hours=14))])
            near = [st.integers(-3 * 86_400, 8 * 86_400).map(lambda s_: anchor + timedelta(seconds=s_))] if anchor else []
            wide = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=zones)
            return st.one_of(*[n.flatmap(lambda t: zones.map(lambda z: t.astimezone(z))) for n in near], wide).map(datetime.isoformat)
        if "pattern" in s:
            return st.from_regex(s["pattern"], fullmatch=True)
        return st.text(min_size=s.get("minLength", 0), max_size=min(s.get("maxLength", 30), 30))
    if kind == "array":
        return st.lists(
            schema_strategy(s.get("items", {}), defs, anchor, hints),
            min_size=s.get("minItems", 0),
            max_size=max(min(s.get("maxItems", MAX_ITEMS), MAX_ITEMS), s.get("minItems", 0)),
        )
    if kind == "object" or "properties" in s:
        props = s.get("properties", {})
        required = set(s.get("required", []))

        def prop(name: str, sub: dict) -> Any:
            drawn = schema_strategy(sub, defs, anchor, hints)
            if not hints.get(name):
                return drawn
            known = st.sampled_from(hints[name])
            if _resolve(sub, defs).get("type") == "array":
                known = st.lists(known, min_size=1, max_size=MAX_ITEMS)
            return st.one_of(known, drawn)

        fixed = {k: prop(k, v) for k, v in props.items() if k in required}
        optional = {k: prop(k, v) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(fixed, optional=optional)
    return json_values()


def json_values() -> Any:
    """Any JSON value, nested a little."""
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _nasty_text() -> Any:
    from hypothesis import strategies as st

    return st.one_of(
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=70),
        st.just("\x00"),
        st.just("a\nb"),
        st.just("H0001\n"),
        st.just("医生-001"),
        st.just("\u202e001"),
        st.just("x" * 65),
        st.just(""),
    )


def mutated(body: dict, required: list[str], fields: list[str]) -> Any:
    """A strategy of bodies derived from ``body`` by one mutation (returns JSON values, or raw bytes that are not JSON)."""
    from hypothesis import strategies as st

    def deep(n: int) -> Any:
        v: Any = "x"
        for _ in range(n):
            v = [v]
        return v

    options = [
        st.sampled_from(fields).flatmap(lambda f: st.one_of(json_values(), _nasty_text(), st.just(deep(500))).map(lambda v: {**body, f: v})),
        st.sampled_from(fields).flatmap(lambda f: st.lists(_nasty_text(), min_size=1, max_size=3).map(lambda v: {**body, f: v})),
        st.text(string.ascii_lowercase, min_size=1, max_size=10).map(lambda f: {**body, f"x_{f}": 1}),
        json_values().filter(lambda v: not isinstance(v, dict)),
        st.binary(max_size=64).map(lambda b: b"\x80" + b),
        st.just(b"[" * 5000 + b"]" * 5000),  # deeper than json.dumps (or a recursive parser) can go
    ]
    if required:
        options.append(st.sampled_from(required).map(lambda f: {k: v for k, v in body.items() if k != f}))
    return st.one_of(options)


def request_bodies(doc: dict, path: str, anchor: datetime | None = None, mutate_share: float = 0.35, hints: dict[str, list] | None = None) -> Any:
    """Bodies (bytes) for ``path``'s operation: from its request schema, a ``mutate_share`` of them mutated."""
    from hypothesis import strategies as st

    defs = doc.get("components", {}).get("schemas", {})
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    resolved = _resolve(schema, defs)
    required = list(resolved.get("required", []))
    fields = list(resolved.get("properties", {}))
    valid = schema_strategy(schema, defs, anchor, hints)

    def encode(v: Any) -> bytes:
        return v if isinstance(v, bytes) else json.dumps(v).encode()

    return st.tuples(valid, st.floats(0, 1)).flatmap(
        lambda pair: (mutated(pair[0], required, fields) if pair[1] < mutate_share else st.just(pair[0])).map(encode)
    )


def response_validators(doc: dict) -> dict[tuple[str, str], Any]:
    """{(path, status): validator} for every documented response of the API operations."""
    from jsonschema import Draft202012Validator

    comps = doc.get("components", {})
    out = {}
    for path in API_OPERATIONS:
        for status, resp in doc["paths"][path]["post"]["responses"].items():
            schema = resp.get("content", {}).get("application/json", {}).get("schema")
            if schema is not None:
                out[(path, status)] = Draft202012Validator({**schema, "components": comps})
    return out


class _Client:
    """One keep-alive HTTP connection, reopened after an error."""

    def __init__(self, base: str, timeout: float) -> None:
        u = urlparse(base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def fetch_document(base: str, timeout: float = 30.0) -> dict:
    """The service's published OpenAPI document."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/docs.json", timeout=timeout) as r:
        return json.loads(r.read())


def harvest_suggestions(base: str, key: str, hcp_ids: list[str], as_of: datetime | None, timeout: float = 60.0) -> list[str]:
    """Suggestion ids really served to ``hcp_ids`` (so fuzzed feedback can name them)."""
    body = {"hcp_ids": hcp_ids[:20], **({"as_of": as_of.isoformat()} if as_of else {})}
    status, data = _Client(base, timeout).post("/recommend", json.dumps(body).encode(), {"Content-Type": "application/json", "X-API-Key": key})
    if status != 200:
        return []
    return [s["suggestion_id"] for r in json.loads(data)["results"] for s in r["suggestions"]]


def _fuzz_operation(
    client: _Client, path: str, bodies: Any, validators: dict, headers: dict[str, str], cases: int, seed: int, failures: list[dict[str, Any]], max_failures: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Post ``cases`` bodies drawn from ``bodies`` to ``path``: (counts, statuses); problems appended to ``failures``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    counts = {"cases": 0, "server_errors": 0, "undocumented_status": 0, "nonconforming": 0, "transport_errors": 0}
    statuses: dict[str, int] = {}

    # Generation only: shrinking would re-run failing cases against the server, and a failure is recorded, not raised.
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def case(body: bytes) -> None:
        counts["cases"] += 1
        try:
            status, data = client.post(path, body, headers)
        except Exception as exc:
            counts["transport_errors"] += 1
            failures.append({"path": path, "problem": f"transport: {type(exc).__name__}", "body": body[:200].decode("utf-8", "replace")})
            return
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        problem = None
        if status >= 500:  # 503 too: "audit trail unavailable" was how a bad as_of showed
            counts["server_errors"] += 1
            problem = "5xx"
        validator = validators.get((path, str(status)))
        if validator is None:
            counts["undocumented_status"] += 1
            problem = problem or "undocumented status"
        else:
            try:
                errors = list(validator.iter_errors(json.loads(data)))
            except ValueError:
                errors = ["not JSON"]
            if errors:
                counts["nonconforming"] += 1
                problem = problem or f"nonconforming: {str(errors[0])[:300]}"
        if problem and len(failures) < max_failures:
            failures.append(
                {
                    "path": path,
                    "status": status,
                    "problem": problem,
                    "body": body[:200].decode("utf-8", "replace"),
                    "answer": data[:300].decode("utf-8", "replace"),
                }
            )

    hypothesis_seed(seed)(case)()
    return counts, statuses


def _op(path: str) -> str:
    """An operation's name in the figures: ``/feedback/batch`` -> ``feedback_batch``."""
    return path.strip("/").replace("/", "_")


def run_fuzz(
    base: str,
    key: str,
    *,
    cases_per_op: int = 1000,
    seed: int = 0,
    anchor: datetime | None = None,
    paths: tuple[str, ...] = API_OPERATIONS,
    timeout: float = 60.0,
    keep_failures: int = 5,
    hints: dict[str, list] | None = None,
) -> dict[str, Any]:
    """Fuzz each operation with ``cases_per_op`` generated requests; figures per operation and in total (see module docstring).

    ``hints``: known values by property name (``hcp_ids``, ``rep_id``, ...); with ``hcp_ids`` known, suggestion ids served
    to them are harvested first so feedback reaches the audit trail and the online push.
    """
    doc = fetch_document(base, timeout)
    hints = dict(hints or {})
    if hints.get("hcp_ids") and "suggestion_id" not in hints:
        hints["suggestion_id"] = harvest_suggestions(base, key, hints["hcp_ids"], anchor, timeout)
    validators = response_validators(doc)
    client = _Client(base, timeout)
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    figures: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for path in paths:
        op = _op(path)
        counts, statuses = _fuzz_operation(
            client,
            path,
            request_bodies(doc, path, anchor, hints=hints),
            validators,
            headers,
            cases_per_op,
            seed + paths.index(path),
            failures,
            keep_failures * len(paths),
        )
        figures.update({f"{op}_{k}": v for k, v in counts.items()})
        figures[f"{op}_statuses"] = dict(sorted(statuses.items()))
    total = {k: sum(figures[f"{_op(p)}_{k}"] for p in paths) for k in ("cases", "server_errors", "undocumented_status", "nonconforming", "transport_errors")}
    figures.update({f"total_{k}": v for k, v in total.items()})
    figures["elapsed_s"] = round(time.perf_counter() - t0, 1)
    figures["failures"] = failures
    return figures


def run_fuzz_bench(
    workdir: Any, *, cases_per_op: int = 1000, n_hcps: int = 60, seed: int = 0, rebuild: bool = False, simulate: Any = None, progress: Any = None
) -> dict[str, Any]:
    """``nba bench fuzz``: build (or reuse) a sandbox world, serve it with ``bentoml serve``, fuzz every operation; the figures.

    ``simulate`` writes the world's contract data (``nba.wiring.simulate_dataset``), needed only to build one.
    """
    import os
    from pathlib import Path

    from contract.io import read_frame
    from serving.bench import free_port, wait_ready
    from serving.cli import serve_process
    from serving.sandbox import AS_OF, build_world

    say = progress or (lambda _m: None)
    workdir = Path(workdir).resolve()
    marker = workdir / "world.json"
    if rebuild or not marker.exists():
        import shutil

        if simulate is None:
            raise ValueError(f"{workdir}: no fuzzing world yet and no simulator to build one")
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"building a world of {n_hcps} HCPs (features, tiny champion)")
        w = build_world(workdir, simulate=simulate, n_hcps=n_hcps, seed=seed)
        reps = sorted(set(read_frame(w.data_dir, "hcps", columns=["rep_id"])["rep_id"].astype(str)))
        marker.write_text(json.dumps({"serving_yaml": str(w.serving_yaml), "hcp_ids": w.hcp_ids, "rep_ids": reps}))
    info = json.loads(marker.read_text())
    serving_yaml = Path(info["serving_yaml"])
    audit_db = workdir / "audit-fuzz.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{audit_db}{suffix}").unlink(missing_ok=True)
    key = "nba_fuzz_bench_key"
    os.environ["NBA_API_KEYS"] = f"fuzz:{key}"
    port = free_port()
    proc = serve_process(serving_yaml, {"audit_url": f"sqlite:///{audit_db}"}, "127.0.0.1", port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
        say(f"fuzzing {len(API_OPERATIONS)} operations x {cases_per_op} cases")
        figures = run_fuzz(
            base, key, cases_per_op=cases_per_op, seed=seed, anchor=AS_OF, hints={"hcp_ids": info.get("hcp_ids", []), "rep_id": info.get("rep_ids", [])}
        )
    finally:
        from nba.servers import stop_group

        stop_group(proc, timeout_s=20)
    figures["cases_per_op"] = cases_per_op
    return figures
