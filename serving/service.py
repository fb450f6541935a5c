"""The BentoML service: thin HTTP handlers over ``serving.engine`` (start with ``nba serve``).

Configuration comes from ``NBA_SERVING_CONFIG`` (a serving YAML; default configs/serving.yaml)
and ``NBA_SERVING_SET`` (JSON object of dotted overrides), which ``nba serve`` sets.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from http import HTTPStatus

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException  # noqa: E402
from starlette.responses import Response  # noqa: E402

from nba.configuration import load_config  # noqa: E402
from serving.admission import Admission  # noqa: E402
from serving.auth import KeyRing  # noqa: E402
from serving.config import ServingConfig  # noqa: E402
from serving.metrics import RouteMetrics  # noqa: E402
from serving.middleware import CALLER_KEY, ApiGuard  # noqa: E402
from serving.schemas import (  # noqa: E402
    FeedbackBatch,
    FeedbackBatchResponse,
    FeedbackItem,
    FeedbackResponse,
    PlanRequest,
    PlanResponse,
    RecommendRequest,
    RecommendResponse,
)

log = logging.getLogger("nba.serving")


def service_config() -> ServingConfig:
    """The serving config named by the environment (see module docstring)."""
    overrides = json.loads(os.environ.get("NBA_SERVING_SET") or "{}")
    return load_config(ServingConfig, "serving", os.environ.get("NBA_SERVING_CONFIG") or None, overrides)


_CFG = service_config()
# Feasible first, as Prometheus counters on /metrics: HCP decisions, first choices a rule had to
# override after masking (stays 0), and unmasked first choices a rule made infeasible, by rule.
_DECISIONS = bentoml.metrics.Counter(name="nba_hcp_decisions", documentation="HCP decisions served by /recommend")
_OVERRIDDEN = bentoml.metrics.Counter(
    name="nba_first_choice_overridden", documentation="served first choices a rule had to override after masking (0 expected)"
)
_INFEASIBLE = bentoml.metrics.Counter(
    name="nba_unmasked_first_infeasible", documentation="the policy's unmasked first choice broke a rule and was masked before ranking", labelnames=["rule"]
)


def _count_feasibility(feasibility: dict) -> None:
    _DECISIONS.inc(feasibility.get("decisions", 0))
    _OVERRIDDEN.inc(feasibility.get("first_choice_overridden", 0))
    for rule, count in feasibility.get("unmasked_first_infeasible_by_rule", {}).items():
        _INFEASIBLE.labels(rule=rule).inc(count)


def _error(status: HTTPStatus, message: str) -> BentoMLException:
    return BentoMLException(message, error_code=status)


def _caller(ctx: bentoml.Context) -> str | None:
    """The API key's name ApiGuard authenticated (None with auth off): recorded with the audit rows."""
    return getattr(ctx.request.state, CALLER_KEY, None)


def _new_request_id() -> str:
    from serving.ids import uuid7_hex  # time-ordered, as the audit trail's other ids

    return str(uuid7_hex(1)[0])


# The worker's service instance, for the middleware (built before it) to reach the audit trail.
_INSTANCE: NextBestAction | None = None


def _undelivered(scope: dict) -> None:
    """Admission control's report of a response that never reached its caller: mark its suggestions."""
    request_id = (scope.get("state") or {}).get(REQUEST_ID_KEY)
    if request_id is not None and _INSTANCE is not None:
        _INSTANCE.mark_undelivered(request_id)


def _engine_wait_s() -> float:
    """How long the oldest work still waiting for this worker's engine thread has waited (admission control's wait probe)."""
    return _INSTANCE.waits.oldest_s() if _INSTANCE is not None else 0.0


def _shed(path: str, reason: str) -> None:
    from serving.metrics import metrics

    metrics().shed.labels(endpoint=path, reason=reason).inc()


def _batch_observed(callers: int, hcps: int) -> None:
    from serving.metrics import metrics

    m = metrics()
    m.batch_callers.observe(callers)
    m.batch_hcps.observe(hcps)


# Where a handler leaves its request id in the ASGI scope's state for admission control.
REQUEST_ID_KEY = "nba_request_id"


# BentoML's own HTTP metrics label raw paths (unbounded series) and miscount: serving.metrics counts instead.
@bentoml.service(name="nba", workers=_CFG.workers, traffic={"timeout": _CFG.request_timeout_s}, metrics={"enabled": False})
class NextBestAction:
    """Next-best-action suggestions, rep day plans and the feedback loop for a pharma CRM."""

    def __init__(self) -> None:
        global _INSTANCE
        from concurrent.futures import ThreadPoolExecutor

        from nba.quiet import drop_known_warnings

        # SQLAlchemy (inside MLflow) and pydantic (inside BentoML) deprecations would fill the service log.
        drop_known_warnings()

        from serving.batching import MicroBatcher, WaitClock
        from serving.engine import Recommender

        self.cfg = service_config()
        sys.setswitchinterval(self.cfg.gil_switch_interval_ms / 1000.0)
        self.engine = Recommender.from_config(self.cfg)
        # One thread owns the engine (Feast's SQLite online store and the model are not meant for
        # concurrent use): HTTP parsing, validation, waiting and JSON stay on the event loop, and
        # micro-batching makes the one thread score many callers per call.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="nba-engine")
        # Marks of undelivered responses are audit writes only: off the engine's thread.
        self.side = ThreadPoolExecutor(1, thread_name_prefix="nba-audit-marks")
        # Work waiting for the engine thread (micro-batch callers, plans, feedback): admission control reads its oldest wait.
        self.waits = WaitClock()
        b = self.cfg.batching
        self.batcher = (
            MicroBatcher(self._score, self.executor, max_hcps=b.max_hcps, max_wait_ms=b.max_wait_ms, on_batch=_batch_observed, clock=self.waits)
            if b.enabled
            else None
        )
        from serving.catchup import PushCatchUp

        o = self.cfg.online_read
        self.catch_up = PushCatchUp(lambda: self.engine.retry_pushes(limit=o.push_retry_hcps), self.executor.submit, o.push_retry_s).start()
        # The champion's outcome shift: read at start, refitted from the audit trail's outcomes every refresh_s.
        oc = self.cfg.outcome_calibration
        self.outcome_refit = PushCatchUp(
            self.engine.refresh_outcome_shift, self.executor.submit, oc.refresh_s if oc.enabled else 0.0, name="outcome shift refit"
        )
        try:
            self.executor.submit(self.engine.refresh_outcome_shift).result()
        except Exception as exc:  # the trail is down: served without the shift until the next round
            log.warning("outcome calibration not read: %s: %s", type(exc).__name__, exc)
        self.outcome_refit.start()
        if self.engine.model is None:
            log.error("no champion model loaded: %s", self.engine.model_error)
        from serving.engine import freeze_heap

        freeze_heap()
        _INSTANCE = self

    def __is_ready__(self) -> bool:
        """Ready when a champion is loaded (or the deployment is configured rules-only)."""
        return self.engine.ready

    def _score(self, key: tuple, ids: list[str], request_ids: list[str]):
        """One engine call (on the engine thread) for callers sharing ``key``: the engine's keyword arguments as sorted (name, value) pairs."""
        from serving.clock import server_now

        kwargs = dict(key)
        if kwargs.get("channels"):
            kwargs["channels"] = list(kwargs["channels"])
        # The server's clock judges content approval; a backtest replays its as_of and is not recorded (serving.clock).
        backtest = kwargs.pop("backtest", False)
        now = server_now(self.cfg)
        kwargs.update(as_of=kwargs.get("as_of") or now, clock=None if backtest else now, record=not backtest)
        result = self.engine.recommend(ids, request_ids=request_ids, **kwargs)
        if backtest:
            result.notes.append("backtest: not recorded in the audit trail; these suggestion ids take no feedback")
        _count_feasibility(result.feasibility)  # once per engine call, not per caller of a batch
        return result

    def mark_undelivered(self, request_id: str) -> None:
        """Record, off the request path, that ``request_id``'s suggestions never reached the caller."""
        from serving.metrics import metrics

        metrics().undelivered.inc()
        mark = getattr(self.engine.audit, "mark_undelivered", None)
        if mark is None:
            log.warning("response %s undelivered; this audit trail cannot mark it", request_id)
            return

        def go() -> None:
            try:
                mark(request_id)
            except Exception:
                log.exception("could not mark request %s undelivered", request_id)

        self.side.submit(go)

    async def _on_engine(self, fn, *args, **kwargs):
        import asyncio
        import functools

        token = self.waits.enter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(self.waits.run, token, fn, *args, **kwargs))
        finally:
            self.waits.leave(token)

    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(self, ctx: bentoml.Context, **request) -> RecommendResponse:
        """Top-k suggested actions for each HCP, with reasons, time windows and the model version.

        Every suggestion is an action the guardrails allow (consent, caps, cool-downs, window rules,
        approved content); ``window: today`` or a ``decision_date`` plans one local day instead of the week.
        """
        from serving.engine import RequestError
        from serving.service_io import recommend_json

        req = RecommendRequest.model_construct(**request)  # BentoML validated it against input_spec already
        ids = list(dict.fromkeys(req.hcp_ids))
        if len(ids) > self.cfg.max_batch:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, f"hcp_ids: {len(ids)} ids exceed the batch limit of {self.cfg.max_batch}")
        from serving.clock import decision_time, server_now

        backtest = bool(getattr(req, "backtest", False))
        try:  # as_of within the clock skew and the look-ahead of the server's clock, or an explicit backtest
            as_of = (
                None
                if req.as_of is None
                else decision_time(
                    req.as_of, server_now(self.cfg), skew_s=self.cfg.max_clock_skew_s, lookahead_days=self.cfg.max_lookahead_days, backtest=backtest
                )
            )
        except RequestError as exc:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        # Only callers whose engine arguments are all equal share an engine call (values hashable):
        # reasons are worded per call (locale), and each suggestion row records who asked (caller).
        engine_kwargs = {
            "k": req.k,
            "channels": tuple(req.channels) if req.channels else None,
            "as_of": as_of,
            "rep_id": req.rep_id,
            "window": req.window,
            "decision_date": req.decision_date,
            "locale": getattr(req, "locale", None),
            "caller": _caller(ctx),
            "backtest": backtest,
        }
        key = tuple(sorted(engine_kwargs.items()))
        request_id = _new_request_id()
        # Admission control reads it to mark the suggestions undelivered if the caller has gone.
        setattr(ctx.request.state, REQUEST_ID_KEY, request_id)
        try:
            if self.batcher is not None:
                result = await self.batcher.submit(key, ids, request_id)
            else:
                import dataclasses

                result = dataclasses.replace(await self._on_engine(self._score, key, ids, [request_id] * len(ids)), request_id=request_id)
        except RequestError as exc:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        except Exception as exc:  # the audit store is down: suggestions cannot be served unrecorded
            log.exception("recommend failed")
            raise _error(HTTPStatus.SERVICE_UNAVAILABLE, f"audit trail unavailable: {type(exc).__name__}") from exc
        # Encoded straight from the payload: re-validating our own 3,000-suggestion output cost more
        # than scoring it (the tests check the payload against RecommendResponse).
        return Response(recommend_json(result, ids), media_type="application/json")

    @bentoml.api(route="/plan", input_spec=PlanRequest)
    async def plan(self, **request) -> PlanResponse:
        """A rep's contacts for a day, ranked by expected value and packed within capacity."""
        from serving.clock import server_now
        from serving.engine import RequestError
        from serving.planning import plan_day, plan_payload

        req = PlanRequest.model_validate(request)
        try:
            plan, result, v_cap, m_cap, deferred = await self._on_engine(
                plan_day,
                self.engine,
                req.rep_id,
                req.date,
                visit_capacity=req.visit_capacity,
                message_capacity=req.message_capacity,
                include_territory=req.include_territory,
                locale=req.locale,
                now=server_now(self.cfg),
            )
        except RequestError as exc:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        from serving.reasons import plan_explanation

        locale = req.locale or self.cfg.locale
        return PlanResponse.model_validate(
            {
                "rep_id": req.rep_id,
                "date": req.date,
                "model_version": result.model_version,
                "visit_capacity": v_cap,
                "message_capacity": m_cap,
                "contacts": plan_payload(plan, locale),
                "deferred": deferred,
                "explanation": plan_explanation(len(plan), v_cap, m_cap, deferred, locale),
            }
        )

    @bentoml.api(route="/feedback", input_spec=FeedbackItem)
    async def feedback(self, ctx: bentoml.Context, **item) -> FeedbackResponse:
        """Record an outcome for a suggestion: idempotent by feedback id, stored before answering."""
        req = FeedbackItem.model_validate(item)
        out = await self._store_feedback(ctx, [req], prefix="")
        return FeedbackResponse.model_validate(out["results"][0])

    @bentoml.api(route="/feedback/batch", input_spec=FeedbackBatch)
    async def feedback_batch(self, ctx: bentoml.Context, **body) -> FeedbackBatchResponse:
        """Record many outcomes in one transaction (all or nothing; idempotent per feedback id), then push each affected HCP online once."""
        req = FeedbackBatch.model_validate(body)
        if len(req.items) > self.cfg.feedback_max_items:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, f"items: {len(req.items)} items exceed the batch limit of {self.cfg.feedback_max_items}")
        return FeedbackBatchResponse.model_validate(await self._store_feedback(ctx, req.items, prefix="items"))

    async def _store_feedback(self, ctx: bentoml.Context, items: list, prefix: str) -> dict:
        """Time rules, then the engine's batch call; errors name the item (``items[3]: ...``) in a batch."""
        from serving.audit import FeedbackConflict, UnknownSuggestion
        from serving.clock import feedback_time, server_now
        from serving.engine import RequestError

        def where(i: int | None, field: str) -> str:
            return f"{prefix}[{i}]: {field}" if prefix and i is not None else field

        now, caller, rows = server_now(self.cfg), _caller(ctx), []
        for i, req in enumerate(items):
            try:  # stored as UTC; a ts beyond the clock skew in the future would lift caps and cool-downs
                ts = feedback_time(req.ts, now, skew_s=self.cfg.max_clock_skew_s)
            except RequestError as exc:
                raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, where(i, str(exc)) if prefix else str(exc)) from None
            rows.append({**req.model_dump(), "ts": ts, "caller": caller})
        try:
            return await self._on_engine(self.engine.feedback_batch, rows)
        except UnknownSuggestion as exc:
            i = getattr(exc, "index", None)
            sid = rows[i]["suggestion_id"] if i is not None else exc.args[0]
            raise _error(HTTPStatus.NOT_FOUND, where(i, f"suggestion_id: {sid!r} was never served")) from None
        except FeedbackConflict as exc:
            raise _error(HTTPStatus.CONFLICT, where(getattr(exc, "index", None), f"feedback_id: {exc}")) from None
        except Exception as exc:
            log.exception("feedback failed")
            raise _error(HTTPStatus.SERVICE_UNAVAILABLE, f"audit trail unavailable: {type(exc).__name__}") from exc


# Outermost first: count every answer (401, 413 and 503 included), then auth and size, then admission.
NextBestAction.add_asgi_middleware(RouteMetrics)
NextBestAction.add_asgi_middleware(
    ApiGuard,
    keyring=KeyRing.load(_CFG.api_key_hashes),
    require_auth=_CFG.require_auth,
    max_body_bytes=_CFG.max_body_bytes,
)
NextBestAction.add_asgi_middleware(
    Admission,
    max_in_flight=_CFG.admission.max_in_flight,
    max_queue=_CFG.admission.max_queue,
    queue_timeout_ms=_CFG.admission.queue_timeout_ms,
    retry_after_s=_CFG.admission.retry_after_s,
    max_wait_ms=_CFG.admission.max_wait_ms,
    wait_probe=_engine_wait_s,
    on_undelivered=_undelivered,
    on_shed=_shed,
)
