"""`nba promote`: the challenger becomes champion only on evidence.

The evidence is what `nba evaluate` tagged on the model versions (names in ``training.tracking``):
the simulator's true policy value where the data has ground truth, else the off-policy estimate's
lower bound against the champion (or, for the first model, against the logged policy), under a
trusted overlap verdict. The rule is pure (``decide``); ``promote_job`` reads the registry and moves
the alias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nba.errors import ExpectedError
from training import tracking as trk

TRUTH, OPE = "truth", "ope"


class PromotionError(ExpectedError, ValueError):
    """An expected condition that stops `nba promote` (no challenger, nothing evaluated): one line, no traceback."""


@dataclass(frozen=True)
class Decision:
    """Whether the challenger is promoted, why (one line), on which evidence, and the figures compared."""

    promoted: bool
    reason: str
    evidence: str | None  # TRUTH | OPE | None (nothing to decide on)
    challenger_value: float | None = None
    champion_value: float | None = None
    gain: float | None = None  # challenger minus what it is compared with
    gain_ci_low: float | None = None  # OPE only: the lower bound of that gain
    compared_with: str | None = None  # "champion" | "logged policy" | None


def _number(tags: dict[str, Any], key: str) -> float | None:
    """A numeric tag: None when absent or blank, NaN when it is not a number (so no comparison passes)."""
    raw = tags.get(key)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        return math.nan


def _fmt(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


def evidence_of(tags: dict[str, Any] | None) -> str | None:
    """TRUTH when a version carries a true policy value, OPE when it carries off-policy figures, else None."""
    tags = tags or {}
    if _number(tags, trk.POLICY_VALUE_TAG) is not None:
        return TRUTH
    if any(tags.get(k) not in (None, "") for k in trk.OPE_TAGS):
        return OPE
    return None


def _untrusted(tags: dict[str, Any]) -> str | None:
    """Why the OPE figures cannot be trusted, or None when the verdict is trusted."""
    verdict = tags.get(trk.OPE_VERDICT_TAG)
    if verdict == trk.VERDICT_TRUSTED:
        return None
    why = tags.get(trk.OPE_VERDICT_REASON_TAG) or "no reason recorded"
    if verdict is None:
        return f"the evaluation recorded no overlap verdict ('{trk.OPE_VERDICT_TAG}' tag missing): run `nba evaluate` again"
    return f"the off-policy estimate is {verdict}: {why}"


def _ope_against(tags: dict[str, Any], diff_tag: str, low_tag: str, what: str, keep: str) -> Decision:
    """Promote iff the verdict is trusted and the lower bound of the paired gain over ``what`` is above zero."""
    est = tags.get(trk.OPE_ESTIMATOR_TAG) or "OPE"
    value = _number(tags, trk.OPE_VALUE_TAG)
    gain, low = _number(tags, diff_tag), _number(tags, low_tag)
    base = value - gain if value is not None and gain is not None else None
    figures = Decision(False, "", OPE, value, base if what != "logged policy" else None, gain, low, what)
    untrusted = _untrusted(tags)
    if untrusted is not None:
        return replace(figures, reason=f"{untrusted}; {keep}")
    if low is None:
        return replace(figures, reason=f"the evaluation has no lower bound of the gain over the {what} ('{low_tag}' tag): run `nba evaluate` again; {keep}")
    setting = tags.get(trk.OPE_SETTING_TAG)
    where = f" [{setting}]" if setting else ""
    line = f"{est} gain over the {what} {_fmt(gain, True)}, lower bound {_fmt(low, True)}"
    if low > 0:
        return replace(figures, promoted=True, reason=f"{line} > 0: the challenger becomes champion{where}")
    return replace(figures, reason=f"{line} is not above 0: not shown better; {keep}{where}")


def decide(challenger_tags: dict[str, Any] | None, champion_version: str | None, champion_tags: dict[str, Any] | None, same_version: bool) -> Decision:
    """The promotion rule with its figures (see ``promotion_decision``)."""
    ch = dict(challenger_tags or {})
    if same_version:
        return Decision(False, f"the challenger already is the champion (version {champion_version})", evidence_of(ch))
    kind = evidence_of(ch)
    if kind is None:
        return Decision(False, "the challenger has not been evaluated (no policy value or off-policy tags): run `nba evaluate` first", None)
    truth = _number(ch, trk.POLICY_VALUE_TAG)
    if truth is not None and not math.isfinite(truth):
        return Decision(
            False, f"the challenger's '{trk.POLICY_VALUE_TAG}' tag is {ch.get(trk.POLICY_VALUE_TAG)!r}, not a number: run `nba evaluate` again", TRUTH
        )
    if champion_version is None:
        if truth is not None:
            return Decision(True, f"no champion yet: the challenger becomes champion (true policy value {_fmt(truth)})", TRUTH, truth)
        decision = _ope_against(ch, trk.OPE_VS_LOGGED_TAG, trk.OPE_VS_LOGGED_CI_LOW_TAG, "logged policy", "the logged policy stays")
        return replace(decision, reason=f"no champion yet: {decision.reason}")

    champ = dict(champion_tags or {})
    old = _number(champ, trk.POLICY_VALUE_TAG)
    apart = ""
    if truth is not None and old is not None:
        mine, theirs = ch.get(trk.POLICY_SETTING_TAG), champ.get(trk.POLICY_SETTING_TAG)
        if not (mine and theirs and mine != theirs):  # a champion from before settings were tagged is compared as it is
            figures = Decision(truth > old, "", TRUTH, truth, old, truth - old, None, "champion")
            if truth > old:
                return replace(figures, reason=f"challenger policy value {_fmt(truth)} beats the champion's {_fmt(old)}")
            return replace(figures, reason=f"challenger policy value {_fmt(truth)} does not beat the champion's {_fmt(old)}")
        apart = (
            f"policy values are not comparable: the challenger was evaluated with {mine}, the champion with {theirs}; "
            f"evaluate both the same way (`nba evaluate --version N`)"
        )

    keep = f"champion version {champion_version} stays"
    if evidence_of({k: v for k, v in ch.items() if k in trk.OPE_TAGS}) is None:
        return Decision(
            False,
            apart
            or (
                f"the challenger has no off-policy comparison with champion version {champion_version} "
                f"(true policy values only on simulated data for both): run `nba evaluate` again"
            ),
            TRUTH if apart else None,
        )
    compared = ch.get(trk.OPE_CHAMPION_VERSION_TAG)
    if str(compared or "") != str(champion_version):
        was = f"it was compared with version {compared}" if compared else "it was evaluated when there was no champion"
        return Decision(
            False, f"evaluate the challenger again: {was}, the champion is {champion_version}", OPE, _number(ch, trk.OPE_VALUE_TAG), compared_with="champion"
        )
    return _ope_against(ch, trk.OPE_VS_CHAMPION_TAG, trk.OPE_VS_CHAMPION_CI_LOW_TAG, "champion", keep)


def promotion_decision(
    challenger_tags: dict[str, Any] | None, champion_version: str | None, champion_tags: dict[str, Any] | None, same_version: bool
) -> tuple[bool, str]:
    """(promote?, one-line reason) from the versions' evaluation tags.

    Already champion: no. No champion: promote on a true value; else iff the lower bound of the
    gain over the logged policy is above 0 and the overlap verdict is trusted. A champion: if both
    carry true values under the same setting, the higher wins (ties keep the champion); else iff the
    challenger was compared with this very champion, the verdict is trusted and the lower bound of
    the paired gain over the champion is above 0.
    """
    d = decide(challenger_tags, champion_version, champion_tags, same_version)
    return d.promoted, d.reason


def promote_job(cfg: Any) -> dict[str, Any]:
    """Move `champion` to the challenger if the evidence says so; return the figures. Raises
    ``PromotionError`` for expected conditions (no model, no challenger, nothing evaluated)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = cfg.tracking.uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        raise PromotionError(f"no MLflow store at {uri}: run `nba train` first (or point tracking.uri at the store)")
    trk.setup(cfg.tracking)
    name = cfg.tracking.registered_model
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise PromotionError(f"no registered model {name!r} in {cfg.tracking.uri}: run `nba train` first") from None
    challenger = trk.version_for_alias(name, trk.CHALLENGER)
    if challenger is None:
        raise PromotionError(f"registered model {name!r} has no '{trk.CHALLENGER}' version: run `nba train` first")
    ctags = dict(challenger.tags or {})
    champion = trk.version_for_alias(name, trk.CHAMPION)
    same = champion is not None and str(champion.version) == str(challenger.version)
    if evidence_of(ctags) is None and not same:
        raise PromotionError(
            f"{name} version {challenger.version} has not been evaluated (no '{trk.POLICY_VALUE_TAG}' or "
            f"'{trk.OPE_VALUE_TAG}' tags): run `nba evaluate --version {challenger.version}` first"
        )
    d = decide(ctags, str(champion.version) if champion is not None else None, dict(champion.tags or {}) if champion is not None else None, same)
    bento_model = bento_note = None
    if d.promoted:
        try:
            bundle = trk.bundle_path(name, str(challenger.version))
        except Exception as exc:  # a version registered without nba's pyfunc: nothing a Bento could serve
            bento_note = f"not copied into the BentoML model store: version {challenger.version} has no bundle ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            # Into the BentoML model store before the alias moves: a copy that fails leaves the champion where it was.
            bento_model = copy_to_bento_store(name, str(challenger.version), bundle, ctags)
        client.set_registered_model_alias(name, trk.CHAMPION, challenger.version)
    previous = int(champion.version) if champion is not None else None
    return {
        "promoted": bool(d.promoted),
        "evidence": d.evidence,
        "challenger_version": int(challenger.version),
        "previous_champion_version": previous,
        "champion_version": int(challenger.version) if d.promoted else previous,
        "challenger_policy_value": d.challenger_value,
        "previous_champion_policy_value": d.champion_value,
        "policy_value_unit": {TRUTH: "responses_per_hcp_week", OPE: "reward_per_decision"}.get(d.evidence or ""),
        "gain": d.gain,
        "gain_ci_low": d.gain_ci_low,
        "compared_with": d.compared_with,
        "ope_estimator": ctags.get(trk.OPE_ESTIMATOR_TAG) if d.evidence == OPE else None,
        "ope_setting": ctags.get(trk.OPE_SETTING_TAG) if d.evidence == OPE else None,
        "reason": d.reason,
        "bento_model": bento_model,
        "bento_model_note": bento_note,
    }


def bento_home() -> Path:
    """BentoML's home as BentoML resolves it (``$BENTOML_HOME``, else ~/bentoml), read at each call."""
    import os

    return Path(os.path.expandvars(os.environ.get("BENTOML_HOME") or str(Path.home() / "bentoml")))


def copy_to_bento_store(name: str, version: str, bundle_dir: Path, tags: dict[str, Any] | None = None) -> str:
    """Copy a registered version's bundle into the BentoML model store (``bento_home()/models``) as ``<name>:<version>``; return the tag.

    ``bentofile.yaml`` packs it into a Bento, so a built Bento carries the exact model version it
    serves. A copy already under the tag is replaced, so the store's ``latest`` is always the last
    promoted champion (what ``bentofile.yaml`` packs).
    """
    import os
    import shutil

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage report leaves the machine (as serving.service)
    import bentoml
    from bentoml._internal.models import ModelStore  # the store at $BENTOML_HOME now, not the one BentoML cached at first use
    from bentoml.exceptions import NotFound

    store = ModelStore(bento_home() / "models")
    tag = f"{name.lower()}:{version}"
    keep = ("run_id", "data_fingerprint", trk.SELECTION_WINDOW_TAG)
    metadata = {"registered_model": name, "registry_version": version, **{k: str(v) for k, v in (tags or {}).items() if k in keep}}
    try:
        # Replaced even when it holds the same run: created anew, it becomes the store's "latest" (a rollback promotes an older version).
        bentoml.models.delete(tag, _model_store=store)
    except NotFound:
        pass
    with bentoml.models.create(tag, labels={"registry_version": version, "promoted_as": trk.CHAMPION}, metadata=metadata, _model_store=store) as model:
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    return str(model.tag)
