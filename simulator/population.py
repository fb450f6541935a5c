"""Building the world: hospitals, HCPs with hidden preferences, reps, products and content."""

from __future__ import annotations

import numpy as np

from contract.schema import CHANNELS, DEPARTMENTS, REP_TYPES, TITLES, TOPICS
from simulator.catalogue import GENERALIST_PRODUCTS, build_content, product_arrays
from simulator.config import SimulatorConfig
from simulator.drift import add_campaigns
from simulator.world import CH, REGION_WEIGHTS, REGIONS, TIMEZONES, HiddenTruth, PublicWorld

_DEPT_P = np.array([0.2, 0.12, 0.12, 0.16, 0.14, 0.08, 0.1, 0.08])
# Title mix per hospital tier (chief, associate chief, attending, resident); pharmacists come
# from the pharmacy department.
_TITLE_P = np.array(
    [
        [0.14, 0.24, 0.37, 0.25],
        [0.10, 0.22, 0.40, 0.28],
        [0.06, 0.18, 0.44, 0.32],
        [0.03, 0.12, 0.50, 0.35],
    ]
)
# KOL probability by (tier, title): senior titles at tertiary hospitals.
_KOL_P = np.array(
    [
        [0.40, 0.14, 0.02, 0.0, 0.01],
        [0.18, 0.06, 0.01, 0.0, 0.0],
        [0.04, 0.01, 0.0, 0.0, 0.0],
        [0.01, 0.0, 0.0, 0.0, 0.0],
    ]
)
_BEDS_MEAN = np.array([80.0, 55.0, 35.0, 15.0])
# Share of the department's patients an HCP of each title treats.
_PATIENT_SHARE = np.array([0.28, 0.22, 0.16, 0.08, 0.12])
_ADOPTION_BY_LIFECYCLE = np.array([0.5, 1.4, 2.4, 2.1])
_WEEKDAY_P = np.array([0.17, 0.22, 0.22, 0.2, 0.13, 0.03, 0.03])
_DAYPART_P = np.array([0.27, 0.18, 0.18, 0.37])
# Senior titles prefer visits and conferences; juniors prefer phones and online.
_TITLE_CHANNEL = np.zeros((len(TITLES), len(CHANNELS)))
_TITLE_CHANNEL[0, [CH["visit"], CH["conference"], CH["wechat_push"]]] = (0.4, 0.6, -0.3)
_TITLE_CHANNEL[1, [CH["visit"], CH["conference"]]] = (0.3, 0.3)
_TITLE_CHANNEL[3, [CH["visit"], CH["wechat_push"], CH["webinar"], CH["wecom_1to1"]]] = (-0.3, 0.3, 0.3, 0.2)
_TITLE_CHANNEL[4, [CH["visit"], CH["email"], CH["conference"]]] = (-0.2, 0.2, -0.5)
_DEPT_TOPIC = np.zeros((len(DEPARTMENTS), len(TOPICS)))
_DEPT_TOPIC[DEPARTMENTS.index("oncology"), TOPICS.index("clinical_data")] = 0.5
_DEPT_TOPIC[DEPARTMENTS.index("general_medicine"), TOPICS.index("patient_management")] = 0.5
_DEPT_TOPIC[DEPARTMENTS.index("pharmacy"), TOPICS.index("guideline")] = 0.4
# Seed-stream tag of the per-HCP timing strength: its own stream, so a world without timing
# heterogeneity draws exactly what it drew before the knob existed.
_TIMING_STREAM = 0x7113E


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def share_of(adoption: np.ndarray, share_cap: np.ndarray, slope: float) -> np.ndarray:
    """Our share of an HCP's prescriptions at a position on the adoption ladder."""
    return share_cap * _sigmoid(slope * (adoption - 2.0))


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (rows sum to 1), vectorised."""
    u = rng.random(probs.shape[0])
    return np.minimum((u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


def _assign_reps(rng: np.random.Generator, cfg: SimulatorConfig, dept: np.ndarray, region: np.ndarray, hospital: np.ndarray):
    """Chronic reps get 80-120 HCPs of nearby hospitals; specialty reps whole departments."""
    n = len(dept)
    specialty = np.isin(dept, [DEPARTMENTS.index(d) for d in cfg.population.specialty_departments])
    rep = np.empty(n, dtype=np.int64)
    next_rep = 0
    rep_type: list[int] = []
    chronic = np.flatnonzero(~specialty)
    if len(chronic):
        order = chronic[np.lexsort((hospital[chronic], region[chronic]))]
        k = max(1, -(-len(order) // cfg.population.chronic_rep_max_hcps))
        rep[order] = next_rep + (np.arange(len(order)) * k) // len(order)
        next_rep += k
        rep_type += [REP_TYPES.index("chronic")] * k
    spec = np.flatnonzero(specialty)
    if len(spec):
        order = spec[np.lexsort((hospital[spec], region[spec], dept[spec]))]
        # Whole departments: cut only where the (department, hospital) group changes.
        key = dept[order] * (hospital.max() + 1) + hospital[order]
        group_start = np.r_[True, key[1:] != key[:-1]]
        start_pos = np.maximum.accumulate(np.where(group_start, np.arange(len(order)), 0))
        local = start_pos // cfg.population.specialty_rep_target_hcps
        uniq, local = np.unique(local, return_inverse=True)
        rep[order] = next_rep + local
        next_rep += len(uniq)
        rep_type += [REP_TYPES.index("specialty")] * len(uniq)
    rep_type_arr = np.array(rep_type, dtype=np.int64)
    # A rep's region is where most of their HCPs work.
    counts = np.bincount(rep * len(REGIONS) + region, minlength=next_rep * len(REGIONS)).reshape(next_rep, len(REGIONS))
    rep_region = counts.argmax(axis=1).astype(np.int64)
    visit_cap = np.where(rep_type_arr == 0, rng.integers(7, 11, next_rep), rng.integers(5, 9, next_rep))
    msg_cap = rng.integers(30, 81, next_rep)
    return rep, rep_type_arr, rep_region, visit_cap.astype(np.int64), msg_cap.astype(np.int64)


def build_world(cfg: SimulatorConfig) -> tuple[PublicWorld, HiddenTruth]:
    """Draw the whole world from ``cfg.seed``: same config and seed, same world."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xC0FFEE]))
    pop, resp = cfg.population, cfg.response
    n = cfg.hcps

    n_hosp = max(4, int(round(n / pop.hcps_per_hospital)))
    tier_p = np.array(pop.hospital_tier_shares) / sum(pop.hospital_tier_shares)
    hosp_tier = rng.choice(4, n_hosp, p=tier_p)
    hosp_region = rng.choice(len(REGIONS), n_hosp, p=np.array(REGION_WEIGHTS) / sum(REGION_WEIGHTS))
    size = np.array(pop.hospital_tier_size)[hosp_tier] * rng.lognormal(0, 0.3, n_hosp)
    hospital = rng.choice(n_hosp, n, p=size / size.sum())
    tier = hosp_tier[hospital]
    region = hosp_region[hospital]
    dept = rng.choice(len(DEPARTMENTS), n, p=_DEPT_P)
    title = _pick(rng, _TITLE_P[tier])
    pharmacy = dept == DEPARTMENTS.index("pharmacy")
    title[pharmacy] = TITLES.index("pharmacist")
    kol = rng.random(n) < _KOL_P[tier, title]

    tz = np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    tz[(region == REGIONS.index("northwest")) & (u < 0.5)] = TIMEZONES.index("Asia/Urumqi")
    tz[(region == REGIONS.index("south")) & (u < 0.08)] = TIMEZONES.index("Asia/Hong_Kong")

    # Department beds are shared by every HCP of the same hospital department.
    _, dept_key = np.unique(hospital * len(DEPARTMENTS) + dept, return_inverse=True)
    dept_beds = rng.lognormal(0, 0.45, dept_key.max() + 1)
    beds = np.clip(np.round(_BEDS_MEAN[tier] * dept_beds[dept_key]), 4, 5000).astype(np.int64)

    prod_ids, prod_area, prod_life = product_arrays()
    area_product = {int(a): i for i, a in enumerate(prod_area)}
    generalist = np.array([prod_ids.index(p) for p in GENERALIST_PRODUCTS])
    product = np.array([area_product.get(int(d), -1) for d in range(len(DEPARTMENTS))])[dept]
    no_own = product < 0
    product[no_own] = generalist[rng.integers(0, len(generalist), no_own.sum())]

    # Patient-count potential: beds x turnover/month x indication share x boxes per patient,
    # times the share of the department's patients this HCP treats.
    turnover = rng.uniform(1.5, 3.0, n)
    indication = rng.uniform(0.2, 0.8, n)
    boxes_per_patient = rng.choice([2.0, 4.0, 6.0], n, p=[0.3, 0.4, 0.3])
    potential = beds * turnover * indication * boxes_per_patient * _PATIENT_SHARE[title] * rng.lognormal(0, 0.25, n)
    potential = np.round(potential, 1)

    life = prod_life[product]
    adoption0 = _ADOPTION_BY_LIFECYCLE[life] + 0.4 * kol + 0.3 * (tier == 0) + rng.normal(0, 0.6, n)
    adoption0 = np.clip(adoption0, 0.0, 4.0)
    share_cap = rng.uniform(0.35, 0.8, n)
    support = np.round(share_of(adoption0, share_cap, cfg.adoption.share_slope), 4)

    high_pot = potential > np.quantile(potential, pop.segment_potential_quantile)
    high_sup = support > np.quantile(support, pop.segment_support_quantile)
    segment = np.where(high_pot, np.where(high_sup, 0, 1), np.where(high_sup, 2, 3)).astype(np.int64)

    profile = np.round(rng.beta(6 * pop.profile_completeness_mean, 6 * (1 - pop.profile_completeness_mean), n), 3)
    consent = rng.random((n, len(CHANNELS))) < np.array([pop.consent[c] for c in CHANNELS])

    rep, rep_type, rep_region, visit_cap, msg_cap = _assign_reps(rng, cfg, dept, region, hospital)

    # Hidden preferences. Responsiveness is confounded with tier: the HCPs reps visit most
    # (A segment, tertiary A, KOLs) respond well whatever is done.
    support_z = (support - support.mean()) / (support.std() + 1e-9)
    responsiveness = rng.normal(0, resp.responsiveness_sd, n) + resp.tier_responsiveness * (
        0.5 * (tier == 0) + 0.5 * kol + 0.3 * support_z + 0.3 * (segment == 0)
    )
    channel_aff = _TITLE_CHANNEL[title] + rng.normal(0, resp.channel_affinity_sd, (n, len(CHANNELS)))
    topic_aff = _DEPT_TOPIC[dept] + rng.normal(0, resp.topic_affinity_sd, (n, len(TOPICS)))
    pref_weekday = rng.choice(7, n, p=_WEEKDAY_P)
    pref_daypart = rng.choice(4, n, p=_DAYPART_P)
    trend_mult = rng.uniform(0.5, 1.5, n)
    # The CRM's potential is an estimate: the true market deviates from it.
    market_week = potential * 12.0 / 52.0 * rng.lognormal(-0.03, 0.25, n)

    content = build_content(rng, cfg.start_date, cfg.days, pop.content_per_product, resp.content_quality_sd)
    content = add_campaigns(content, cfg)
    quality = content.pop("content_quality")

    width = max(7, len(str(n)))
    public = PublicWorld(
        start_date=cfg.start_date,
        weeks=cfg.weeks,
        product_ids=prod_ids,
        product_area=prod_area,
        product_lifecycle=prod_life,
        rep_ids=[f"R{i + 1:05d}" for i in range(len(rep_type))],
        rep_region=rep_region,
        rep_type=rep_type,
        rep_visit_cap_day=visit_cap,
        rep_msg_cap_day=msg_cap,
        hcp_ids=[f"H{i + 1:0{width}d}" for i in range(n)],
        hospital_ids=[f"HOSP{i + 1:05d}" for i in range(n_hosp)],
        hcp_hospital=hospital.astype(np.int64),
        hcp_tier=tier.astype(np.int64),
        hcp_dept=dept.astype(np.int64),
        hcp_title=title.astype(np.int64),
        hcp_kol=kol,
        hcp_rep=rep,
        hcp_region=region.astype(np.int64),
        hcp_tz=tz,
        hcp_product=product.astype(np.int64),
        hcp_beds=beds,
        hcp_potential_month=potential,
        hcp_support=support,
        hcp_segment=segment,
        hcp_profile=profile,
        consent=consent,
        **content,
    )
    hidden = HiddenTruth(
        channel_affinity=channel_aff,
        trend_multiplier=trend_mult,
        topic_affinity=topic_aff,
        pref_weekday=pref_weekday.astype(np.int64),
        pref_daypart=pref_daypart.astype(np.int64),
        responsiveness=responsiveness,
        adoption0=adoption0,
        share_cap=share_cap,
        market_week=market_week,
        content_quality=quality,
        timing_strength=timing_strength(cfg),
    )
    return public, hidden


def timing_strength(cfg: SimulatorConfig) -> np.ndarray | None:
    """Per-HCP mean-1 lognormal scale of the timing terms (``response.timing_sd``); None when everyone is alike."""
    sd = cfg.response.timing_sd
    if sd <= 0:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _TIMING_STREAM]))
    return rng.lognormal(-0.5 * sd * sd, sd, cfg.hcps)
