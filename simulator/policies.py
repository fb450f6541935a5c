"""Ready policies: today's logging behaviour, the brief's rules, random-eligible, and the oracle.

Each is a callable ``policy(obs) -> Actions`` (see ``simulator.environment``). All respect
consent, approved content, working hours, frequency caps and rep capacity, so the environment
never has to drop their actions.
"""

from __future__ import annotations

import numpy as np

from contract.schema import CHANNELS, SEGMENTS, TOPICS
from simulator.actions import Actions
from simulator.config import SimulatorConfig
from simulator.constraints import WORK_DAYPARTS, WORK_WEEKDAYS, Eligibility, fit_rep_capacity
from simulator.oracle import _TOPIC_WEIGHT
from simulator.tables import suggestion_number
from simulator.world import CH, REP_TIME_MASK, WORKDAY_ONLY_MASK, PublicWorld

# The behaviour policy makes two decisions per HCP per week: the rep's (visit, meeting, call,
# 1:1 message or nothing) and marketing's (WeChat broadcast, email, webinar or conference
# invite, or nothing). Each is one categorical draw; the last column is "no contact".
REP_SLOT = tuple(CH[c] for c in ("visit", "department_meeting", "phone", "wecom_1to1"))
MARKETING_SLOT = tuple(CH[c] for c in ("wechat_push", "email", "webinar", "conference"))
NONE = len(CHANNELS)
_LIFECYCLE_VISIT = np.array([1.2, 1.2, 1.0, 0.7])
_LIFECYCLE_PUSH = np.array([1.0, 1.0, 1.0, 1.4])
_LIFECYCLE_CONFERENCE = np.array([0.8, 1.0, 1.5, 0.8])


class ContentIndex:
    """Per (product, channel) eligible content lists of a week, with campaign and per-topic picks.

    The picks rotate every ``campaign_weeks`` weeks (1: a new item each week).
    """

    def __init__(self, elig: Eligibility, week: int, public: PublicWorld, campaign_weeks: int = 1) -> None:
        p_n, c_n, _ = elig.content.shape
        self.count = np.zeros(p_n * c_n, dtype=np.int64)
        self.start = np.zeros(p_n * c_n, dtype=np.int64)
        self.campaign = np.full(p_n * c_n, -1, dtype=np.int64)
        self.by_topic = np.full((p_n * c_n, len(TOPICS)), -1, dtype=np.int64)
        flat: list[np.ndarray] = []
        pos = 0
        period = week // campaign_weeks
        for p in range(p_n):
            for c in range(c_n):
                e = np.flatnonzero(elig.content[p, c])
                i = p * c_n + c
                self.start[i], self.count[i] = pos, len(e)
                pos += len(e)
                flat.append(e)
                if len(e):
                    # Marketing rotates one campaign item per product and channel each period.
                    self.campaign[i] = e[period % len(e)]
                    topics = public.content_topic[e]
                    for t in range(len(TOPICS)):
                        hit = e[topics == t]
                        if len(hit):
                            self.by_topic[i, t] = hit[period % len(hit)]
        self.flat = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
        self.n_channels = c_n

    def key(self, product: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """Row of (product, channel) in the index arrays."""
        return product * self.n_channels + channel

    def topic_pick(self, key: np.ndarray, topic: np.ndarray) -> np.ndarray:
        """The item on ``topic`` (or -1 where none or topic is -1)."""
        return np.where(topic >= 0, self.by_topic[key, np.maximum(topic, 0)], -1)

    def uniform(self, key: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A uniformly drawn eligible item per row (``u`` in [0, 1))."""
        n = self.count[key]
        pos = self.start[key] + np.minimum((u * n).astype(np.int64), np.maximum(n - 1, 0))
        if not len(self.flat):
            return np.full(len(key), -1, dtype=np.int64)
        return np.where(n > 0, self.flat[np.minimum(pos, len(self.flat) - 1)], -1)


def _work_slot(weekday: np.ndarray, daypart: np.ndarray) -> np.ndarray:
    return (weekday >= 0) & (weekday < WORK_WEEKDAYS) & (daypart >= 0) & (daypart < WORK_DAYPARTS)


def rule_triggers(obs, cfg: SimulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """The brief's visit rules: (several unopened pushes in a row, strong interest) per HCP."""
    b = cfg.behaviour
    return obs.observed.unopened_push_streak >= b.unopened_pushes_for_visit, obs.observed.interest >= b.interest_for_visit


class BehaviourPolicy:
    """Today's reps and marketing: tier-driven visits, weekly broadcasts, the rules, some exploration.

    Confounded on purpose: visits go to A-segment HCPs who respond well anyway, and the channel
    mix is the historical one (visits and WeChat broadcasts heavy, email and webinars light)
    while the world drifts the other way.

    Per HCP-week it draws one rep decision (``REP_SLOT`` channels or none) and one marketing
    decision (``MARKETING_SLOT`` channels or none), then the content. A row's ``propensity`` is
    P(channel) x P(content | channel) within its decision: ``channel_distributions`` and
    ``content_distribution`` give the full distributions, > 0 on every eligible action.
    """

    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg
        self.last_triggered = np.zeros(0, dtype=np.int64)
        self.last_sampled_visit = np.zeros(0, dtype=bool)

    def channel_distributions(self, obs) -> tuple[np.ndarray, np.ndarray]:
        """(rep, marketing) decision distributions, each (n_hcps, channels + 1); rows sum to 1, last column is no contact."""
        b, pub, elig = self.cfg.behaviour, obs.public, obs.eligibility
        n = pub.n_hcps
        streak, interest = rule_triggers(obs, self.cfg)
        life = pub.product_lifecycle[pub.hcp_product]
        wseg = np.array([b.visit_weight_by_segment[s] for s in SEGMENTS])
        gm = np.exp(np.log(wseg).mean())
        visit_w = (gm * (wseg / gm) ** b.confounding)[pub.hcp_segment] * np.where(pub.hcp_kol, 1.3, 1.0) * _LIFECYCLE_VISIT[life]
        visit_w = visit_w * np.where(streak | interest, b.rule_visit_boost, 1.0)

        rep_w = np.zeros((n, NONE + 1))
        rep_w[:, CH["visit"]] = visit_w
        rep_w[:, CH["department_meeting"]] = b.rep_weights.get("department_meeting", 0.0) * np.where(pub.hcp_tier == 0, 1.5, 1.0)
        rep_w[:, CH["phone"]] = b.rep_weights.get("phone", 0.0)
        rep_w[:, CH["wecom_1to1"]] = b.rep_weights.get("wecom_1to1", 0.0)
        rep_w[:, NONE] = b.rep_weights.get("none", 1.0)
        rep_ok = np.zeros((n, NONE + 1), dtype=bool)
        rep_ok[:, list(REP_SLOT)] = elig.channel[:, list(REP_SLOT)]
        rep_ok[:, NONE] = True
        q = rep_w * rep_ok
        q /= q.sum(axis=1, keepdims=True)
        # Reps plan to a share of their capacity: scale rep-time probabilities down where the
        # expected load of a territory would exceed it, moving the mass to "no contact".
        rt = [c for c in REP_SLOT if REP_TIME_MASK[c]]
        load = np.bincount(pub.hcp_rep, weights=q[:, rt].sum(axis=1), minlength=len(pub.rep_ids))
        cap = b.capacity_utilisation * elig.rep_time_capacity
        f = np.minimum(1.0, cap / np.maximum(load, 1e-9))[pub.hcp_rep]
        moved = q[:, rt].sum(axis=1) * (1 - f)
        q[:, rt] *= f[:, None]
        q[:, NONE] += moved
        rep_p = (1 - b.exploration) * q + b.exploration * rep_ok / rep_ok.sum(axis=1, keepdims=True)

        mk_w = np.zeros((n, NONE + 1))
        mw = b.marketing_weights
        mk_w[:, CH["wechat_push"]] = mw.get("wechat_push", 0.0) * _LIFECYCLE_PUSH[life]
        mk_w[:, CH["email"]] = mw.get("email", 0.0)
        mk_w[:, CH["webinar"]] = mw.get("webinar", 0.0)
        mk_w[:, CH["conference"]] = (mw.get("conference", 0.0) + b.kol_conference_weight * pub.hcp_kol) * _LIFECYCLE_CONFERENCE[life]
        mk_w[:, NONE] = mw.get("none", 0.5)
        mk_ok = np.zeros((n, NONE + 1), dtype=bool)
        mk_ok[:, list(MARKETING_SLOT)] = elig.channel[:, list(MARKETING_SLOT)]
        mk_ok[:, NONE] = True
        q = mk_w * mk_ok
        q /= q.sum(axis=1, keepdims=True)
        mk_p = (1 - b.exploration) * q + b.exploration * mk_ok / mk_ok.sum(axis=1, keepdims=True)
        return rep_p, mk_p

    def _content_weights(self, channel: np.ndarray, has_topic: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        eps = self.cfg.behaviour.content_exploration
        camp_share = np.where(channel == CH["wechat_push"], 2 / 3, 1 / 3)
        w_camp = (1 - eps) * np.where(has_topic, camp_share, 1.0)
        w_pers = (1 - eps) * np.where(has_topic, 1 - camp_share, 0.0)
        return w_camp, w_pers, eps

    def _picks(self, obs, hcp: np.ndarray, channel: np.ndarray) -> tuple:
        """Per row: (index, key, campaign item, personal item, last item or -1, and the weights of each)."""
        pub = obs.public
        idx = ContentIndex(obs.eligibility, obs.week, pub, self.cfg.behaviour.campaign_weeks)
        product = pub.hcp_product[hcp]
        key = idx.key(product, channel)
        pers = idx.topic_pick(key, obs.observed.top_topic()[hcp])
        camp = idx.campaign[key]
        w_camp, w_pers, eps = self._content_weights(channel, pers >= 0)
        r = self.cfg.behaviour.repeat_last_item
        last = np.full(len(hcp), -1, dtype=np.int64)
        w_last = np.zeros(len(hcp))
        if r > 0:
            last = obs.observed.last_content[hcp, channel].astype(np.int64)
            last = np.where((last >= 0) & obs.eligibility.content[product, channel, np.maximum(last, 0)], last, -1)
            w_last = np.where(last >= 0, r, 0.0)
            # The habit takes its share first; the usual picks split the rest.
            w_camp, w_pers, eps = w_camp * (1 - w_last), w_pers * (1 - w_last), eps * (1 - w_last)
        return idx, key, camp, pers, last, w_camp, w_pers, eps, w_last

    def content_distribution(self, obs, hcp: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """P(content | HCP, channel) as a (rows, n_content) matrix; rows sum to 1 (contentless channels: all zero)."""
        pub = obs.public
        _, _, camp, pers, last, w_camp, w_pers, eps, w_last = self._picks(obs, hcp, channel)
        out = np.zeros((len(hcp), len(pub.content_ids)))
        rows = np.arange(len(hcp))
        elig = obs.eligibility.content[pub.hcp_product[hcp], channel]  # (rows, K)
        out += np.reshape(eps, (-1, 1)) * elig / np.maximum(elig.sum(axis=1, keepdims=True), 1)
        np.add.at(out, (rows, np.maximum(camp, 0)), np.where(camp >= 0, w_camp, 0.0))
        np.add.at(out, (rows, np.maximum(pers, 0)), np.where(pers >= 0, w_pers, 0.0))
        np.add.at(out, (rows, np.maximum(last, 0)), np.where(last >= 0, w_last, 0.0))
        out[obs.eligibility.contentless[channel]] = 0.0
        return out

    def __call__(self, obs) -> Actions:
        """Sample this week's actions with their logged propensities."""
        pub, rng = obs.public, obs.rng
        n = pub.n_hcps
        rep_p, mk_p = self.channel_distributions(obs)
        parts = []
        for probs in (rep_p, mk_p):
            u = rng.random(n)
            choice = np.minimum((u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), NONE)
            hcp = np.flatnonzero(choice < NONE)
            parts.append((hcp, choice[hcp], probs[hcp, choice[hcp]]))
        hcp = np.concatenate([p[0] for p in parts])
        channel = np.concatenate([p[1] for p in parts])
        p_channel = np.concatenate([p[2] for p in parts])

        b = self.cfg.behaviour
        idx, key, camp, pers, last, w_camp, w_pers, eps, w_last = self._picks(obs, hcp, channel)
        u = rng.random((3, len(hcp)))
        content = np.where(u[0] < w_camp, camp, np.where(u[0] < w_camp + w_pers, pers, idx.uniform(key, u[1])))
        n_elig = np.maximum(idx.count[key], 1)
        p_content = w_camp * (content == camp) + w_pers * (content == pers) + eps / n_elig
        if b.repeat_last_item > 0:
            # Same draw, habit first: [0, w_last) reuses the last item, then campaign, personal, any.
            t = u[0] - w_last
            content = np.where(t < 0, last, np.where(t < w_camp, camp, np.where(t < w_camp + w_pers, pers, idx.uniform(key, u[1]))))
            p_content = w_last * (content == last) + w_camp * (content == camp) + w_pers * (content == pers) + eps / n_elig
        contentless = obs.eligibility.contentless[channel]
        content = np.where(contentless, -1, content)
        p_content = np.where(contentless, 1.0, p_content)

        pref_wd, pref_dp = obs.observed.preferred_slot()
        pw, pd = pref_wd[hcp], pref_dp[hcp]
        weekday = rng.integers(0, WORK_WEEKDAYS, len(hcp))
        daypart = rng.integers(0, WORK_DAYPARTS, len(hcp))
        use_pref = _work_slot(pw, pd) & (u[2] < b.preferred_slot_share)
        weekday, daypart = np.where(use_pref, pw, weekday), np.where(use_pref, pd, daypart)
        wecom = channel == CH["wecom_1to1"]
        known = pw >= 0
        weekday = np.where(wecom & known, pw, weekday)
        daypart = np.where(wecom & known, pd, daypart)
        for name, (wd, dp) in b.campaign_slots.items():
            sel = channel == CH[name]
            fixed_wd = np.where(wd >= 0, wd, weekday)  # -1: keep the drawn weekday
            if name == "wechat_push":
                personal = sel & (content != camp) & known
                weekday = np.where(sel, np.where(personal, pw, fixed_wd), weekday)
                daypart = np.where(sel, np.where(personal, pd, dp), daypart)
            else:
                weekday, daypart = np.where(sel, fixed_wd, weekday), np.where(sel, dp, daypart)

        streak, interest = rule_triggers(obs, self.cfg)
        triggered = streak | interest
        suggestion = np.where((channel == CH["visit"]) & triggered[hcp], suggestion_number(obs.week, hcp), -1)
        self.last_triggered = np.flatnonzero(triggered & obs.eligibility.channel[:, CH["visit"]])
        self.last_sampled_visit = np.zeros(n, dtype=bool)
        self.last_sampled_visit[hcp[channel == CH["visit"]]] = True
        acts = Actions(hcp, channel, content, weekday, daypart, propensity=p_channel * p_content, suggestion=suggestion)
        # The planned load stays under capacity on average; in the rare week a territory's draws
        # exceed it, the rep drops visits at random (the feedback then says "capacity").
        return acts.select(fit_rep_capacity(pub, obs.eligibility, acts, rng.random(len(acts))))


class RuleBasedPolicy:
    """The domain brief's engine: tier-cadence visits, a visit after unopened pushes or strong interest, else push the top topic at the preferred time."""

    # Weeks between routine visits per segment (A/B/C/D): resources follow tiers.
    VISIT_CADENCE_WEEKS = np.array([1, 2, 4, 8])

    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg

    def __call__(self, obs) -> Actions:
        """One push (or email) per HCP, plus rep visits where a rule fires or a tier's cadence is due, within capacity."""
        pub, elig = obs.public, obs.eligibility
        idx = ContentIndex(elig, obs.week, pub)
        top = obs.observed.top_topic()
        pref_wd, pref_dp = obs.observed.preferred_slot()
        streak, interest = rule_triggers(obs, self.cfg)
        last = obs.observed.last_visit_week
        due = (last < 0) | (obs.week - last >= self.VISIT_CADENCE_WEEKS[pub.hcp_segment])
        fired = streak | interest

        visit = np.flatnonzero((fired | due) & elig.channel[:, CH["visit"]])
        key = idx.key(pub.hcp_product[visit], np.full(len(visit), CH["visit"]))
        content = idx.topic_pick(key, top[visit])
        content = np.where(content >= 0, content, idx.campaign[key])
        work = _work_slot(pref_wd[visit], pref_dp[visit])
        visits = Actions(
            visit,
            np.full(len(visit), CH["visit"]),
            content,
            np.where(work, pref_wd[visit], 1),
            np.where(work, pref_dp[visit], 0),
            suggestion=suggestion_number(obs.week, visit),
        )
        # Rules first, then the higher tier, then the longest wait; only a planned share of capacity.
        waited = np.where(last[visit] < 0, 99, obs.week - last[visit])
        priority = 100.0 * fired[visit] + 10.0 * (3 - pub.hcp_segment[visit]) + np.minimum(waited, 9)
        visits = visits.select(_within_quota(pub, visits, priority, self.cfg.behaviour.capacity_utilisation * elig.rep_time_capacity))

        # Channel preference learned from the logs: the digital channel with the best observed
        # open rate (a Beta(1, 2) prior keeps untried channels in play), WeChat first on ties.
        digital = np.array([CH[c] for c in ("wechat_push", "email", "wecom_1to1", "webinar")])
        seen = obs.observed
        rate = (seen.opened[:, digital] + 1.0) / (seen.sent[:, digital] + 3.0) + np.array([1e-6, 0, 0, 0])
        rate = np.where(elig.channel[:, digital], rate, -1.0)
        best = rate.argmax(axis=1)
        who = np.flatnonzero(rate.max(axis=1) >= 0)
        ch = digital[best[who]]
        key = idx.key(pub.hcp_product[who], ch)
        content = idx.topic_pick(key, top[who])
        content = np.where(content >= 0, content, idx.campaign[key])
        known = pref_wd[who] >= 0
        pushes = Actions(who, ch, content, np.where(known, pref_wd[who], 1), np.where(known, pref_dp[who], 3))
        return Actions.concat([visits, pushes])


def _within_quota(public: PublicWorld, acts: Actions, priority: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Keep, per rep, the highest-priority actions up to ``quota`` (all of them rep-time actions)."""
    rep = public.hcp_rep[acts.hcp]
    order = np.lexsort((-priority, rep))
    first = np.r_[True, rep[order][1:] != rep[order][:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    keep = np.zeros(len(acts), dtype=bool)
    keep[order] = (np.arange(len(order)) - start) < np.floor(quota[rep[order]])
    return keep


class RandomEligiblePolicy:
    """One uniformly random eligible (channel, content, time) per HCP per week."""

    def __init__(self, touches_per_week: int = 1) -> None:
        self.k = touches_per_week

    def __call__(self, obs) -> Actions:
        """Random eligible actions, trimmed to rep capacity."""
        pub, elig, rng = obs.public, obs.eligibility, obs.rng
        n = pub.n_hcps
        idx = ContentIndex(elig, obs.week, pub)
        ok = elig.channel.astype(float)
        # Distinct channels per HCP: random keys, ineligible channels pushed last.
        keys = np.where(ok > 0, rng.random(ok.shape), 2.0)
        order = np.argsort(keys, axis=1)[:, : min(self.k, elig.max_touches, ok.shape[1])]
        hcp = np.repeat(np.arange(n), order.shape[1])
        channel = order.reshape(-1)
        good = ok[hcp, channel] > 0
        hcp, channel = hcp[good], channel[good]
        key = idx.key(pub.hcp_product[hcp], channel)
        content = np.where(elig.contentless[channel], -1, idx.uniform(key, rng.random(len(hcp))))
        work = WORKDAY_ONLY_MASK[channel]
        weekday = np.where(work, rng.integers(0, WORK_WEEKDAYS, len(hcp)), rng.integers(0, 7, len(hcp)))
        daypart = np.where(work, rng.integers(0, WORK_DAYPARTS, len(hcp)), rng.integers(0, 4, len(hcp)))
        acts = Actions(hcp, channel, content, weekday, daypart)
        return acts.select(fit_rep_capacity(pub, elig, acts, rng.random(len(acts))))


class OraclePolicy:
    """Cheats by design: reads the environment's hidden state and picks the truly best actions.

    Myopic: each week it takes the ``touches_per_week`` channels with the highest true
    P(positive response) now (best content and time on each), within every constraint.
    """

    def __init__(self, env, touches_per_week: int | None = None) -> None:
        self.env = env
        self.k = env.cfg.oracle_touches_per_week if touches_per_week is None else touches_per_week

    def __call__(self, obs) -> Actions:
        """The oracle's top-k channels per HCP, each with its best content and time."""
        return best_actions(self.env.oracle, self.env.state, obs.week, obs.eligibility, self.k)


def best_per_channel(oracle, state, week: int, elig: Eligibility) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every HCP and channel: best content, weekday, daypart and the resulting P(response) (-1 if ineligible).

    Every term of the true response counts: an item the HCP has been shown loses to a fresh one
    under repetition decay, a day inside a channel's wear-out window loses to a later one.
    """
    pub, hid = oracle.public, oracle.hidden
    n, c_n = pub.n_hcps, len(CHANNELS)
    all_h = np.arange(n)
    best_content = np.full((n, c_n), -1, dtype=np.int64)
    content_score = np.zeros((n, c_n))
    rep = oracle.cfg.repetition
    exposure = state.exposure if rep.enabled else None
    for c in range(c_n):
        if elig.contentless[c]:
            continue
        for prod in range(len(pub.product_ids)):
            e = np.flatnonzero(elig.content[prod, c])
            rows = np.flatnonzero(pub.hcp_product == prod)
            if not len(e) or not len(rows):
                continue
            s = _TOPIC_WEIGHT * hid.topic_affinity[rows][:, pub.content_topic[e]] + hid.content_quality[e][None, :]
            if exposure is not None:
                seen = e < exposure.shape[1]
                s[:, seen] -= rep.per_exposure_logit * exposure[np.ix_(rows, e[seen])]
            j = s.argmax(axis=1)
            best_content[rows, c] = e[j]
            content_score[rows, c] = s[np.arange(len(rows)), j]
    wd_terms = np.stack([oracle.time_logit(all_h, np.full(n, d), hid.pref_daypart) for d in range(7)], axis=1)
    dp_terms = np.stack([oracle.time_logit(all_h, hid.pref_weekday, np.full(n, d)) for d in range(4)], axis=1)
    weekday = np.zeros((n, c_n), dtype=np.int64)
    daypart = np.zeros((n, c_n), dtype=np.int64)
    p = np.full((n, c_n), -1.0)
    wear = oracle.cfg.wearout.enabled
    logistic = oracle.cfg.response.link == "logistic"
    for c in range(c_n):
        ch = np.full(n, c)
        days = WORK_WEEKDAYS if WORKDAY_ONLY_MASK[c] else 7
        day_terms = wd_terms[:, :days]
        if wear:
            day_terms = day_terms + np.stack([oracle.wearout_logit(state, week, all_h, ch, np.full(n, d)) for d in range(days)], axis=1)
        wd = day_terms.argmax(axis=1)
        dp = dp_terms[:, :WORK_DAYPARTS].argmax(axis=1) if WORKDAY_ONLY_MASK[c] else dp_terms.argmax(axis=1)
        weekday[:, c], daypart[:, c] = wd, dp
        logit = oracle.channel_logit(state, week, all_h, ch) + content_score[:, c] + oracle.time_logit(all_h, wd, dp)
        if wear:
            logit = logit + oracle.wearout_logit(state, week, all_h, ch, wd)
        pc = oracle.delivery[c] / (1 + np.exp(-logit)) if logistic else oracle.link(logit, ch)
        p[:, c] = np.where(elig.channel[:, c], pc, -1.0)
    return best_content, weekday, daypart, p


def best_actions(oracle, state, week: int, elig: Eligibility, k: int = 1) -> Actions:
    """The oracle's best k actions per HCP (distinct channels, within caps and rep capacity)."""
    content, weekday, daypart, p = best_per_channel(oracle, state, week, elig)
    pub = oracle.public
    k = min(k, elig.max_touches, p.shape[1])
    p = p.copy()
    for _ in range(6):
        order = np.argsort(-p, axis=1, kind="stable")[:, :k]
        hcp = np.repeat(np.arange(pub.n_hcps), k)
        ch = order.reshape(-1)
        good = p[hcp, ch] >= 0
        hcp, ch = hcp[good], ch[good]
        acts = Actions(hcp, ch, content[hcp, ch], weekday[hcp, ch], daypart[hcp, ch])
        keep = fit_rep_capacity(pub, elig, acts, p[hcp, ch])
        if keep.all():
            break
        p[hcp[~keep], ch[~keep]] = -1.0
    return acts.select(keep)


__all__ = [
    "BehaviourPolicy",
    "ContentIndex",
    "OraclePolicy",
    "RandomEligiblePolicy",
    "RuleBasedPolicy",
    "best_actions",
    "best_per_channel",
]
