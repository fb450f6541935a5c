"""The BentoML service: thin HTTP handlers over ``serving.engine`` (start with ``nba serve``).

Configuration comes from ``NBA_SERVING_CONFIG`` (a serving YAML; default configs/serving.yaml)
and ``NBA_SERVING_SET`` (JSON object of dotted overrides), which ``nba serve`` sets.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http import HTTPStatus

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException  # noqa: E402
from starlette.responses import Response  # noqa: E402

from nba.configuration import load_config  # noqa: E402
from serving.auth import KeyRing  # noqa: E402
from serving.config import ServingConfig  # noqa: E402
from serving.middleware import ApiGuard  # noqa: E402
from serving.schemas import (  # noqa: E402
    FeedbackItem, FeedbackResponse, PlanRequest, PlanResponse, RecommendRequest, RecommendResponse,
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
_OVERRIDDEN = bentoml.metrics.Counter(name="nba_first_choice_overridden", documentation="served first choices a rule had to override after masking (0 expected)")
_INFEASIBLE = bentoml.metrics.Counter(name="nba_unmasked_first_infeasible", documentation="the policy's unmasked first choice broke a rule and was masked before ranking",
                                      labelnames=["rule"])


def _count_feasibility(feasibility: dict) -> None:
    _DECISIONS.inc(feasibility.get("decisions", 0))
    _OVERRIDDEN.inc(feasibility.get("first_choice_overridden", 0))
    for rule, count in feasibility.get("unmasked_first_infeasible_by_rule", {}).items():
        _INFEASIBLE.labels(rule=rule).inc(count)


def _error(status: HTTPStatus, message: str) -> BentoMLException:
    return BentoMLException(message, error_code=status)


@bentoml.service(name="nba", workers=_CFG.workers, traffic={"timeout": 60})
class NextBestAction:
    """Next-best-action suggestions, rep day plans and the feedback loop for a pharma CRM."""

    def __init__(self) -> None:
        from serving.engine import Recommender

        self.cfg = service_config()
        self.engine = Recommender.from_config(self.cfg)
        # Feast's SQLite online store and the model are not meant for concurrent use.
        self.lock = threading.Lock()
        if self.engine.model is None:
            log.error("no champion model loaded: %s", self.engine.model_error)
        from serving.engine import freeze_heap

        freeze_heap()

    def __is_ready__(self) -> bool:
        """Ready when a champion is loaded (or the deployment is configured rules-only)."""
        return self.engine.ready

    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    def recommend(self, **request) -> RecommendResponse:
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
        try:
            with self.lock:
                result = self.engine.recommend(ids, k=req.k, channels=req.channels, as_of=req.as_of, rep_id=req.rep_id,
                                               window=req.window, decision_date=req.decision_date)
        except RequestError as exc:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        except Exception as exc:  # the audit store is down: suggestions cannot be served unrecorded
            log.exception("recommend failed")
            raise _error(HTTPStatus.SERVICE_UNAVAILABLE, f"audit trail unavailable: {type(exc).__name__}") from exc
        _count_feasibility(result.feasibility)
        # Encoded straight from the payload: re-validating our own 3,000-suggestion output cost more
        # than scoring it (the tests check the payload against RecommendResponse).
        return Response(recommend_json(result, ids), media_type="application/json")

    @bentoml.api(route="/plan", input_spec=PlanRequest)
    def plan(self, **request) -> PlanResponse:
        """A rep's contacts for a day, ranked by expected value and packed within capacity."""
        from serving.engine import RequestError
        from serving.planning import plan_day, plan_payload

        req = PlanRequest.model_validate(request)
        try:
            with self.lock:
                plan, result, v_cap, m_cap, deferred = plan_day(
                    self.engine, req.rep_id, req.date, visit_capacity=req.visit_capacity, message_capacity=req.message_capacity,
                    include_territory=req.include_territory,
                )
        except RequestError as exc:
            raise _error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        return PlanResponse.model_validate({
            "rep_id": req.rep_id, "date": req.date, "model_version": result.model_version, "visit_capacity": v_cap,
            "message_capacity": m_cap, "contacts": plan_payload(plan), "deferred": deferred,
        })

    @bentoml.api(route="/feedback", input_spec=FeedbackItem)
    def feedback(self, **item) -> FeedbackResponse:
        """Record an outcome for a suggestion: idempotent by feedback id, stored before answering."""
        from serving.audit import FeedbackConflict, UnknownSuggestion

        req = FeedbackItem.model_validate(item)
        try:
            with self.lock:
                out = self.engine.feedback(req.model_dump())
        except UnknownSuggestion:
            raise _error(HTTPStatus.NOT_FOUND, f"suggestion_id: {req.suggestion_id!r} was never served") from None
        except FeedbackConflict as exc:
            raise _error(HTTPStatus.CONFLICT, f"feedback_id: {exc}") from None
        except Exception as exc:
            log.exception("feedback failed")
            raise _error(HTTPStatus.SERVICE_UNAVAILABLE, f"audit trail unavailable: {type(exc).__name__}") from exc
        return FeedbackResponse.model_validate(out)


NextBestAction.add_asgi_middleware(
    ApiGuard, keyring=KeyRing.load(_CFG.api_key_hashes), require_auth=_CFG.require_auth, max_body_bytes=_CFG.max_body_bytes,
)
