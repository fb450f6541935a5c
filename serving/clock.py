"""The server's clock and the API's time rules: what a caller's ``as_of`` and feedback ``ts`` may say.

Compliance depends on time: which content is approved, which caps and cool-downs hold. A caller's
clock must not decide that. So the server's clock judges content approval; ``as_of`` may run
ahead of it by at most ``max_lookahead_days`` and behind it by at most ``max_clock_skew_s``, unless
the request is an explicit backtest (approval judged at ``as_of``, nothing recorded in the audit
trail); a feedback ``ts`` may run ahead by at most the skew (a ``ts`` far in the future would lift
caps and cool-downs) and is stored as UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any


def _reject(message: str) -> Exception:
    # Imported here: the engine imports this module (approval_basis), and RequestError lives there.
    from serving.engine import RequestError

    return RequestError(message)


def server_now(cfg: Any) -> datetime:
    """The server's clock: ``cfg.fixed_clock`` when a sandbox pins it, else the system clock (UTC)."""
    fixed = getattr(cfg, "fixed_clock", None)
    return as_utc(fixed) if fixed is not None else datetime.now(UTC)


def as_utc(t: datetime) -> datetime:
    """A datetime in UTC (a naive one is taken as UTC already)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def decision_time(as_of: datetime | None, now: datetime, *, skew_s: float, lookahead_days: float, backtest: bool = False) -> datetime:
    """The UTC decision time of a request (``now`` when it gives none); a RequestError naming ``as_of`` when out of bounds."""
    if as_of is None:
        return now
    t = as_utc(as_of)
    if t > now + timedelta(days=lookahead_days, seconds=skew_s):
        raise _reject(f"as_of: {as_of.isoformat()} is more than {lookahead_days:g} days after the server's clock ({now.isoformat(timespec='seconds')})")
    if not backtest and t < now - timedelta(seconds=skew_s):
        raise _reject(
            f"as_of: {as_of.isoformat()} is before the server's clock ({now.isoformat(timespec='seconds')}) by more than "
            f"{skew_s:g} s; send backtest: true to replay a past decision time (answers are then not recorded)"
        )
    return t


def feedback_time(ts: datetime, now: datetime, *, skew_s: float) -> datetime:
    """A feedback ``ts`` in UTC; a RequestError naming ``ts`` when it lies beyond the clock skew in the future."""
    t = as_utc(ts)
    if t > now + timedelta(seconds=skew_s):
        raise _reject(f"ts: {ts.isoformat()} is in the future: more than {skew_s:g} s after the server's clock ({now.isoformat(timespec='seconds')})")
    return t


def approval_basis(as_of: datetime, valid_days: float, clock: datetime | None) -> tuple[datetime, float]:
    """``(at, days)`` for ``ReferenceData.approved_content``: approved at the server's ``clock`` and still ``valid_days`` after ``as_of``.

    ``clock`` None (a backtest, the nightly batch run for a given time) judges at ``as_of`` itself.
    """
    if clock is None:
        return as_of, valid_days
    ahead = max((as_utc(as_of) - as_utc(clock)).total_seconds() / 86_400, 0.0)
    return as_utc(clock), valid_days + ahead


def plan_time(day: date, now: datetime | None) -> datetime:
    """The decision time of a plan for ``day``: the server's clock, or (no clock: tests, offline runs) noon UTC the day before,
    when ``day`` is today or tomorrow in every time zone and none of its dayparts is over."""
    if now is not None:
        return as_utc(now)
    return datetime.combine(day - timedelta(days=1), time(12, 0), tzinfo=UTC)
