"""The weekly environment: step the hidden world forward under any policy and score it.

Usage (evaluation code only; training never touches the ground truth)::

    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy

    env = Environment.from_data_dir("DATA_DIR")          # reads DATA_DIR/_ground_truth
    logged = env.run(BehaviourPolicy(env.cfg))            # the logging policy (reproduces the logs)
    env = Environment.from_data_dir("DATA_DIR")
    oracle = env.run(OraclePolicy(env.oracle))
    ... my = Environment.from_data_dir("DATA_DIR").run(my_policy)
    share_of_oracle_gain(my.value, logged.value, oracle.value)

A *policy* is any callable ``policy(obs: Observation) -> Actions``. ``Observation`` carries only
what a real policy could see: the week index and its Monday, the contract tables of the
static world (products, reps, hcps, content as Arrow), the same as index arrays
(``obs.public``), the history so far (``obs.history.touches()`` arrays or
``obs.history.touchpoints()`` / ``.outcomes()`` contract tables), per-HCP summaries of that
history (``obs.observed``), the week's eligibility masks and capacities (``obs.eligibility``),
and a seeded ``obs.rng``. ``Actions`` lists rows of (hcp index, channel index, content index or
-1, weekday 0-6, daypart 0-3) for the coming week; see ``simulator.actions``.

The environment drops actions that break the rules (no consent, content not approved or not
suited to the channel, visits/meetings/calls outside Mon-Fri working dayparts, more than
``constraints.channel_cap_per_week`` per channel or ``max_touches_per_week`` per HCP, more
than a rep's weekly capacity) and counts them in ``value["violations"]``; ``strict=True``
raises instead. ``run`` returns a ``RunResult`` whose ``value`` holds realised and expected
positive responses (``opened``) and prescriptions, overall and per A/B/C/D segment.
``expected_*`` sums the oracle's probabilities / expected boxes, so it has far less noise than
the realised counts and is what policy comparisons should use.

``step`` advances the hidden state: adoption, contact load, and the touch memory that a
world's structural effects read (last delivered day per channel for wear-out, decayed item
exposures for repetition decay, decayed digital opens for warm-up; see ``simulator.oracle``).

Starting from ``start="beginning"`` replays the logged period (week 0 state, same calendar,
same trends); with the logged behaviour policy and the dataset's seed it regenerates the
logs exactly. ``start="end"`` continues after the logged period from the saved final state.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from contract.schema import CHANNELS, DAYPART_HOURS, DAYPARTS, SEGMENTS
from simulator.actions import Actions
from simulator.config import SimulatorConfig
from simulator.constraints import VIOLATION_KINDS, Eligibility, eligibility, enforce
from simulator.observed import History, ObservedState, TouchBatch
from simulator.oracle import Oracle, WorldState
from simulator.tables import rep_on_row
from simulator.world import CH, HiddenTruth, PublicWorld, contentless_mask

_HOUR_US = 3_600 * 1_000_000
_DAY_US = 24 * _HOUR_US
_DP_START = np.array([DAYPART_HOURS[d][0] for d in DAYPARTS])
_DP_LEN = np.array([DAYPART_HOURS[d][1] - DAYPART_HOURS[d][0] for d in DAYPARTS])
# Typical engaged seconds by content form (CONTENT_FORMS order) and for contentless channels.
_FORM_SECONDS = np.array([200.0, 60.0, 40.0, 90.0, 420.0, 240.0, 2400.0])
_CHANNEL_SECONDS = np.array([900.0, 2400.0, 0.0, 0.0, 0.0, 2700.0, 5400.0, 240.0])
_FORWARDABLE = np.array([c in ("wechat_push", "email", "wecom_1to1", "webinar") for c in CHANNELS])
_REPLYABLE = np.array([c in ("wecom_1to1", "email") for c in CHANNELS])

# Narrow storage for the history (millions of rows at scale); readers widen where they compute.
_TOUCH_DTYPES = {"week": np.int32, "hcp": np.int32, "rep": np.int32, "channel": np.int8, "content": np.int32, "weekday": np.int8, "daypart": np.int8}

Policy = Callable[["Observation"], Actions]


@dataclass
class Observation:
    """What a policy sees before choosing the coming week's actions."""

    week: int
    week_start: dt.date
    tables: dict[str, pa.Table]
    public: PublicWorld
    history: History
    observed: ObservedState
    eligibility: Eligibility
    rng: np.random.Generator


@dataclass
class StepResult:
    """One simulated week: executed touches, outcomes, expected values, dropped actions."""

    week: int
    touches: TouchBatch
    outcomes: dict[str, np.ndarray]
    expected_prescriptions: np.ndarray  # per HCP
    violations: dict[str, int]


@dataclass
class RunResult:
    """A policy's run: the touchpoints/outcomes it generated and its true value."""

    value: dict[str, Any]
    history: History
    p_response: np.ndarray  # oracle probability of every touch in ``history.touches()`` order
    steps: list[StepResult] = field(default_factory=list, repr=False)

    def touchpoints(self) -> pa.Table:
        """The generated touchpoints as a contract table."""
        return self.history.touchpoints()

    def outcomes(self) -> pa.Table:
        """The generated weekly outcomes as a contract table."""
        return self.history.outcomes()


def _seed_rng(seed: int, week: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, week, stream]))


STREAM_ENV, STREAM_POLICY, STREAM_FEEDBACK = 1, 2, 3


class Environment:
    """The hidden world stepped weekly; ``run(policy)`` scores any policy against the ground truth."""

    def __init__(
        self,
        public: PublicWorld,
        hidden: HiddenTruth,
        cfg: SimulatorConfig,
        tables: dict[str, pa.Table],
        *,
        seed: int | None = None,
        state: WorldState | None = None,
        first_week: int = 0,
        strict: bool = False,
    ) -> None:
        self.public, self.hidden, self.cfg, self.tables = public, hidden, cfg, tables
        self.oracle = Oracle(public, hidden, cfg)
        self.seed = cfg.seed if seed is None else seed
        self.state = self.oracle.initial_state() if state is None else state
        self.week = first_week
        self.strict = strict
        self.history = History(public)
        self.observed = ObservedState.empty(public.n_hcps)
        self._p: list[np.ndarray] = []
        self._next_event = 0
        from simulator.drift import onboarding_week

        # Population shift: week each HCP is onboarded (all zeros without one).
        self.onboarded_from = onboarding_week(public.hcp_tier, cfg)

    @classmethod
    def from_config(cls, cfg: SimulatorConfig, **kw: Any) -> Environment:
        """A fresh world built from a config (what ``nba simulate`` logs)."""
        from simulator.population import build_world
        from simulator.tables import content_table, hcps_table, products_table, reps_table

        public, hidden = build_world(cfg)
        tables = {"products": products_table(public), "reps": reps_table(public), "hcps": hcps_table(public), "content": content_table(public)}
        return cls(public, hidden, cfg, tables, **kw)

    @classmethod
    def from_data_dir(
        cls, data_dir: str | Path, *, start: Literal["beginning", "end"] = "beginning", seed: int | None = None, strict: bool = False, seed_offset: int = 0
    ) -> Environment:
        """Load the world of a simulated dataset from its tables and ``_ground_truth``.

        ``seed`` (default: the dataset's) plus ``seed_offset`` draws the world's randomness: tuning
        selects on draws offset from the ones evaluation reports with.
        """
        from contract.io import read_table
        from simulator.ground_truth import read_ground_truth
        from simulator.tables import public_from_tables

        data_dir = Path(data_dir)
        cfg, hidden, final_state = read_ground_truth(data_dir)
        tables = {name: read_table(data_dir, name) for name in ("products", "reps", "hcps", "content")}
        public = public_from_tables(tables, cfg.start_date, cfg.weeks)
        env = cls(public, hidden, cfg, tables, seed=(cfg.seed if seed is None else seed) + seed_offset, strict=strict)
        if start == "end":
            env.state = final_state
            env.week = cfg.weeks
            from simulator.observed import observed_from_touchpoints

            logged = read_table(data_dir, "touchpoints")
            env.history = History(public, first_event=logged.num_rows + 1)
            env.observed = observed_from_touchpoints(public, logged)
        elif start != "beginning":
            raise ValueError(f"start must be 'beginning' or 'end', got {start!r}")
        return env

    def p_response(self) -> np.ndarray:
        """Oracle P(positive response) of every touch so far, in ``history.touches()`` order (NaN for inbound)."""
        return np.concatenate(self._p) if self._p else np.zeros(0)

    def inject_drift(self, drift: Any, *, relative: bool = True) -> None:
        """Schedule drift in this world from now on (a ``DriftConfig`` or its dict form).

        With ``relative`` every ``week`` counts from the current week (0 = this week), which is
        how a world continued after its logs (``start="end"``) is made to drift while served.
        Channel shifts and population shifts replace the config's; content campaigns are added to
        the catalogue now (ids after the existing ones, approved from their week).
        """
        from simulator.config import DriftConfig
        from simulator.drift import add_campaigns, onboarding_week
        from simulator.tables import content_table

        spec = drift.model_dump() if isinstance(drift, DriftConfig) else dict(drift)
        if relative:
            spec = {k: [{**ev, "week": int(ev["week"]) + self.week} for ev in v] for k, v in spec.items()}
        new = DriftConfig.model_validate(spec)
        self.cfg = self.cfg.model_copy(update={"drift": new})
        self.oracle.cfg = self.cfg
        if new.content:
            pub, hid = self.public, self.hidden
            names = (
                "content_ids",
                "content_product",
                "content_topic",
                "content_type",
                "content_form",
                "content_approval",
                "content_from_us",
                "content_until_us",
            )
            grown = add_campaigns({**{k: getattr(pub, k) for k in names}, "content_quality": hid.content_quality}, self.cfg)
            for k in names:
                setattr(pub, k, grown[k])
            hid.content_quality = grown["content_quality"]
            self.tables = {**self.tables, "content": content_table(pub)}
        self.onboarded_from = onboarding_week(self.public.hcp_tier, self.cfg)

    def active_hcps(self) -> np.ndarray:
        """(n,) bool: HCPs onboarded by the current week (everyone unless a population shift holds a cohort back)."""
        return self.onboarded_from <= self.week

    def eligibility(self) -> Eligibility:
        """This week's eligibility (consent, onboarding, approved content, channel gaps, capacities)."""
        active = self.active_hcps() if self.cfg.drift.population else None
        return eligibility(self.public, self.week, self.cfg.constraints, self.observed.last_week, active, contentless_mask(self.cfg.contentless_channels))

    def observe(self) -> Observation:
        """What a policy may see at the start of the current week."""
        return Observation(
            week=self.week,
            week_start=self.public.week_start_date(self.week),
            tables=self.tables,
            public=self.public,
            history=self.history,
            observed=self.observed,
            eligibility=self.eligibility(),
            rng=_seed_rng(self.seed, self.week, STREAM_POLICY),
        )

    def step(self, actions: Actions, elig: Eligibility | None = None) -> StepResult:
        """Execute one week of actions: sample responses, outcomes, and advance the hidden state."""
        pub, orc, week = self.public, self.oracle, self.week
        elig = elig if elig is not None else self.eligibility()
        keep, violations = enforce(pub, elig, actions)
        if self.strict and not keep.all():
            bad = {k: v for k, v in violations.items() if v}
            row = int(np.flatnonzero(~keep)[0])
            raise ValueError(f"week {week}: policy broke the rules {bad}; first offending actions row {row}")
        a = actions.select(keep)
        rng = _seed_rng(self.seed, week, STREAM_ENV)
        n_act = len(a)
        state = self.state

        p = orc.expected_response(state, week, a.hcp, a.channel, a.content, a.weekday, a.daypart)
        delivery = orc.delivery[a.channel]
        u = rng.random((6, n_act))
        delivered = u[0] < delivery
        opened = delivered & (u[1] < p / delivery)
        affinity = np.where(a.content >= 0, self.hidden.topic_affinity[a.hcp, pub.content_topic[np.maximum(a.content, 0)]], 0.0)
        base_sec = np.where(a.content >= 0, _FORM_SECONDS[pub.content_form[np.maximum(a.content, 0)]], 0.0)
        base_sec = np.where(_CHANNEL_SECONDS[a.channel] > 0, _CHANNEL_SECONDS[a.channel], base_sec)
        read = np.where(opened, np.minimum(base_sec * np.exp(0.5 * rng.standard_normal(n_act) + 0.2 * affinity), 86_400.0), 0.0)
        interest = affinity + 0.5 * self.hidden.responsiveness[a.hcp] + 0.3 * state.adoption[a.hcp]
        fwd_ok = _FORWARDABLE[a.channel] & opened
        forwarded = fwd_ok & (u[2] < 1 / (1 + np.exp(-(-3.4 + interest))))
        favourited = fwd_ok & (u[3] < 1 / (1 + np.exp(-(-3.0 + interest))))
        replied = _REPLYABLE[a.channel] & opened & (u[4] < 1 / (1 + np.exp(-(-2.2 + interest))))

        offset = pub.tz_offset_h[a.hcp] * _HOUR_US
        minute = (u[5] * _DP_LEN[a.daypart] * 60).astype(np.int64)
        ts = pub.week_start_us(week) + a.weekday * _DAY_US + _DP_START[a.daypart] * _HOUR_US + minute * 60_000_000 - offset
        rep = np.where(rep_on_row(a.channel), pub.hcp_rep[a.hcp], -1)

        # HCP-initiated 1:1 messages: engaged, adopting HCPs write to their rep.
        n = pub.n_hcps
        inbound_p = pub.consent[:, CH["wecom_1to1"]] / (1 + np.exp(-(-5.5 + 0.8 * state.adoption + self.hidden.responsiveness)))
        if self.cfg.drift.population:
            inbound_p = inbound_p * (self.onboarded_from <= week)
        ib = np.flatnonzero(rng.random(n) < inbound_p)
        ib_day = rng.integers(0, 7, len(ib))
        ib_dp = rng.integers(0, 4, len(ib))
        ib_ts = (
            pub.week_start_us(week)
            + ib_day * _DAY_US
            + _DP_START[ib_dp] * _HOUR_US
            + (rng.random(len(ib)) * _DP_LEN[ib_dp] * 3600).astype(np.int64) * 1_000_000
            - pub.tz_offset_h[ib] * _HOUR_US
        )

        cols = {
            "week": np.full(n_act + len(ib), week, dtype=np.int64),
            "hcp": np.r_[a.hcp, ib],
            "rep": np.r_[rep, pub.hcp_rep[ib]],
            "ts_us": np.r_[ts, ib_ts],
            "channel": np.r_[a.channel, np.full(len(ib), CH["wecom_1to1"])],
            "content": np.r_[a.content, np.full(len(ib), -1)],
            "inbound": np.r_[np.zeros(n_act, bool), np.ones(len(ib), bool)],
            "delivered": np.r_[delivered, np.ones(len(ib), bool)],
            "opened": np.r_[opened, np.ones(len(ib), bool)],
            "read_seconds": np.r_[np.round(read, 1), np.round(60 * rng.gamma(2.0, 1.0, len(ib)), 1)],
            "forwarded": np.r_[forwarded, np.zeros(len(ib), bool)],
            "favourited": np.r_[favourited, np.zeros(len(ib), bool)],
            "replied": np.r_[replied, np.zeros(len(ib), bool)],
            "propensity": np.r_[a.propensity, np.full(len(ib), np.nan)],
            "suggestion": np.r_[a.suggestion, np.full(len(ib), -1)],
            "weekday": np.r_[a.weekday, ib_day],
            "daypart": np.r_[a.daypart, ib_dp],
            "p_response": np.r_[p, np.full(len(ib), np.nan)],
        }
        # Rows in time order (ties by HCP) so event ids follow the clock.
        order = np.lexsort((cols["hcp"], cols["ts_us"]))
        touches = TouchBatch({k: v[order].astype(_TOUCH_DTYPES.get(k, v.dtype), copy=False) for k, v in cols.items()})

        gains = np.bincount(a.hcp, weights=opened * orc.adoption_gain(state, a.hcp, a.channel, a.content), minlength=n)
        per_channel = np.bincount(a.hcp * len(CHANNELS) + a.channel, minlength=n * len(CHANNELS)).reshape(n, -1)
        lam = orc.market_mean(week)
        market = rng.poisson(lam)
        rx = rng.binomial(market, orc.share(state.adoption))
        outcomes = {"week": np.full(n, week, dtype=np.int64), "hcp": np.arange(n), "prescriptions": rx, "market_boxes": market}
        expected_rx = lam * orc.share(state.adoption)

        executed = {"hcp": a.hcp, "channel": a.channel, "content": a.content, "weekday": a.weekday, "delivered": delivered, "opened": opened}
        self.state = orc.advance(state, gains, per_channel, week=week, executed=executed)
        self.observed.update(pub, week, touches)
        self.history.append(touches, outcomes)
        self._p.append(touches.cols["p_response"])
        self.week += 1
        return StepResult(week=week, touches=touches, outcomes=outcomes, expected_prescriptions=expected_rx, violations=violations)

    def run(self, policy: Policy, weeks: int | None = None, progress: bool = False, desc: str = "weeks") -> RunResult:
        """Step ``weeks`` weeks (default: the dataset's length) under ``policy`` and score it; ``desc`` labels the progress bar."""
        weeks = self.public.weeks if weeks is None else weeks
        if weeks < 1:
            raise ValueError(f"weeks must be >= 1, got {weeks}")
        steps = []
        it = range(weeks)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=desc, unit="wk", file=sys.stderr)  # the label stays with the bar when stdout is redirected
        for _ in it:
            obs = self.observe()
            steps.append(self.step(policy(obs), obs.eligibility))
        return RunResult(value=score(self.public, steps), history=self.history, p_response=self.p_response(), steps=steps)


def score(public: PublicWorld, steps: list[StepResult]) -> dict[str, Any]:
    """A run's true value: touches, positive responses and prescriptions, overall and per segment."""
    n = public.n_hcps
    touches = np.zeros(n)
    pos = np.zeros(n)
    exp_pos = np.zeros(n)
    rx = np.zeros(n)
    exp_rx = np.zeros(n)
    violations = dict.fromkeys(VIOLATION_KINDS, 0)
    by_channel = np.zeros(len(CHANNELS))
    for s in steps:
        c = s.touches.cols
        out = ~c["inbound"]
        hcp = c["hcp"][out]
        touches += np.bincount(hcp, minlength=n)
        pos += np.bincount(hcp, weights=c["opened"][out].astype(float), minlength=n)
        exp_pos += np.bincount(hcp, weights=c["p_response"][out], minlength=n)
        by_channel += np.bincount(c["channel"][out], minlength=len(CHANNELS))
        rx += s.outcomes["prescriptions"]
        exp_rx += s.expected_prescriptions
        for k, v in s.violations.items():
            violations[k] += v
    weeks = len(steps)

    def block(mask: np.ndarray) -> dict[str, float]:
        hw = max(1, int(mask.sum()) * weeks)
        t = touches[mask].sum()
        return {
            "hcps": int(mask.sum()),
            "touches": int(t),
            "positive_responses": int(pos[mask].sum()),
            "expected_positive_responses": float(exp_pos[mask].sum()),
            "prescriptions": int(rx[mask].sum()),
            "expected_prescriptions": float(exp_rx[mask].sum()),
            "expected_responses_per_hcp_week": float(exp_pos[mask].sum() / hw),
            "expected_prescriptions_per_hcp_week": float(exp_rx[mask].sum() / hw),
            "response_rate_per_touch": float(pos[mask].sum() / t) if t else 0.0,
        }

    value: dict[str, Any] = {"weeks": weeks, **block(np.ones(n, dtype=bool))}
    value["by_segment"] = {s: block(public.hcp_segment == i) for i, s in enumerate(SEGMENTS)}
    value["touches_by_channel"] = {ch: int(by_channel[i]) for i, ch in enumerate(CHANNELS)}
    value["violations"] = violations
    return value


def share_of_oracle_gain(v_policy: dict, v_logged: dict, v_oracle: dict, key: str = "expected_positive_responses") -> float:
    """(V_policy - V_logged) / (V_oracle - V_logged) on ``key`` of three ``RunResult.value`` dicts."""
    denom = v_oracle[key] - v_logged[key]
    if denom == 0:
        raise ValueError(f"oracle and logged policy have the same {key}; the share is undefined")
    return (v_policy[key] - v_logged[key]) / denom


__all__ = ["Environment", "Observation", "Policy", "RunResult", "StepResult", "score", "share_of_oracle_gain"]
