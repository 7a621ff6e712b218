"""Per-user policy for campaigns: who gets a promotional message, on which channel, and when.

Decided during expansion, on the worker that holds the user (users, suppression and
frequency tables are local there), in this order, each with its own reason:
1. `opted_out`: the user unsubscribed from promotions (a template marked
   `critical_override` goes through), then `channel_opt_out`: every channel the campaign
   offers is one the user declined;
2. `no_address` / `no_content`: none of the remaining channels has an address for the
   user and content in the template;
3. `suppressed`: every address of every remaining channel is suppressed;
4. quiet hours, in the user's time zone: deferred to the end of the quiet window, not dropped;
5. `frequency_cap`: the user already had N campaigns within the window;
6. the campaign's send window, in the user's local time: deferred to its next opening.
The first channel, in the campaign's order, that passes 1-3 is the one used (all its
unsuppressed addresses, like a critical notification).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from clarion.schemas.promo import Campaign, SendWindow
from clarion.schemas.records import TemplateVersion, UserProfile
from clarion.tables.suppression import entry
from clarion.tables.users import addresses_for


@dataclass
class Decision:
    channel: str | None = None
    addresses: list[str] = field(default_factory=list)
    skip: str | None = None  # the policy reason the user gets nothing
    not_before: float = 0.0  # > now: deferred (quiet hours, send window)
    deferred_by: str | None = None


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # validated on the way in; an old record may still hold junk
        return ZoneInfo("UTC")


def _minutes(hhmm: str) -> int:
    hours, _, minutes = hhmm.partition(":")
    return int(hours) * 60 + int(minutes)


def _in_window(local_minute: int, start: int, end: int) -> bool:
    if start == end:
        return True  # a window of the whole day
    if start < end:
        return start <= local_minute < end
    return local_minute >= start or local_minute < end  # wraps midnight


def next_outside(t: float, tz: str, start_hhmm: str, end_hhmm: str) -> float:
    """`t` if it is outside the daily window [start, end) in `tz`, else the window's end."""
    return _move(t, tz, _minutes(start_hhmm), _minutes(end_hhmm), inside=False)


def next_inside(t: float, tz: str, start_hhmm: str, end_hhmm: str) -> float:
    """`t` if it is inside the daily window [start, end) in `tz`, else the window's next start."""
    return _move(t, tz, _minutes(start_hhmm), _minutes(end_hhmm), inside=True)


def _move(t: float, tz: str, start: int, end: int, inside: bool) -> float:
    if start == end:
        return t
    local = datetime.fromtimestamp(t, _zone(tz))
    minute = local.hour * 60 + local.minute
    if _in_window(minute, start, end) == inside:
        return t
    target = start if inside else end
    day = local.replace(hour=target // 60, minute=target % 60, second=0, microsecond=0)
    if day <= local:
        day = day + timedelta(days=1)
    return max(_first_reading(day), t)  # never go backwards


def _first_reading(wall: datetime) -> float:
    """The first instant the clock of `wall`'s zone reads `wall` or later.

    A time the clock repeats (DST ends) is the occurrence `wall.fold` names. A time it skips
    (DST starts: 02:30 on a day that jumps from 02:00 to 03:00) is the jump itself, when the
    clock passes it: ZoneInfo alone would read it with the old offset, an hour past the jump.
    """
    naive = wall.replace(tzinfo=None)
    ts = wall.timestamp()
    if _reading(ts, wall) == naive:
        return ts
    lo, hi = sorted(int(wall.replace(fold=fold).timestamp()) for fold in (0, 1))
    while hi - lo > 1:  # the clock reads before `wall` at lo and after it at hi
        mid = (lo + hi) // 2
        if _reading(mid, wall) >= naive:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _reading(ts: float, wall: datetime) -> datetime:
    """The naive wall-clock time of `wall`'s zone at `ts`."""
    return datetime.fromtimestamp(ts, wall.tzinfo).replace(tzinfo=None)


def decide(
    user: UserProfile,
    campaign: Campaign,
    template: TemplateVersion,
    now: float,
    suppressed: Mapping[str, str],
    recent: Mapping[str, float],
    cap: tuple[int, float] | None,
) -> Decision:
    """What `user` gets from `campaign` (recent: other campaigns the user got, key -> when)."""
    override = template.critical_override
    if user.promo_opt_out and not override:
        return Decision(skip="opted_out")
    channels = [ch for ch in campaign.channels if override or ch not in user.channel_opt_out]
    if not channels:
        return Decision(skip="channel_opt_out")
    with_content = set(template.channels())
    reason = "no_content"
    chosen: tuple[str, list[str]] | None = None
    for channel in channels:
        if channel not in with_content:
            continue
        addresses = addresses_for(user, channel)
        if not addresses:
            reason = "no_address" if reason == "no_content" else reason
            continue
        live = [a for a in addresses if entry(channel, a) not in suppressed]
        if not live:
            reason = "suppressed"
            continue
        chosen = (channel, live)
        break
    if chosen is None:
        return Decision(skip=reason)
    at, deferred_by = now, None
    if user.quiet_hours is not None:
        later = next_outside(at, user.timezone, user.quiet_hours.start, user.quiet_hours.end)
        if later > at:
            at, deferred_by = later, "quiet_hours"
    if campaign.window is not None:
        later = _send_window(at, user, campaign.window)
        if later > at:
            at, deferred_by = later, deferred_by or "send_window"
    if cap is not None:  # by when each reaches the user: a deferred one counts at its send time, not now
        limit, window_s = cap
        others = sum(1 for key, when in recent.items() if key != campaign.key and abs(when - at) < window_s)
        if others >= limit:
            return Decision(skip="frequency_cap")
    return Decision(channel=chosen[0], addresses=chosen[1], not_before=at if at > now else 0.0,
                    deferred_by=deferred_by if at > now else None)  # fmt: skip


def _send_window(t: float, user: UserProfile, window: SendWindow) -> float:
    """The first time from `t` inside the campaign's window and outside the user's quiet hours."""
    for _ in range(3):  # the two windows can push each other once each way at most
        moved = next_inside(t, user.timezone, window.start, window.end)
        if user.quiet_hours is not None:
            moved = next_outside(moved, user.timezone, user.quiet_hours.start, user.quiet_hours.end)
        if moved == t:
            break
        t = moved
    return t


def remember(
    recent: dict[str, float], campaign_key: str, when: float, window_s: float, now: float | None = None
) -> dict[str, float]:
    """The user's recent campaigns with this one added at `when` (its send time), those a window
    before `now` (default `when`) dropped: no send from now on can be within their window (idempotent)."""
    since = (when if now is None else now) - window_s
    kept = {key: at for key, at in recent.items() if at > since}
    kept.setdefault(campaign_key, when)
    return kept
