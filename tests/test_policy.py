"""Per-user campaign policy (clarion/agents/policy.py), driven by explicit clock values: never by waiting."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clarion.agents.policy import Decision, decide, next_inside, next_outside, remember
from clarion.schemas.audiences import Audience
from clarion.schemas.promo import Campaign, SendWindow
from clarion.schemas.records import QuietHours, TemplateVersion, UserProfile
from clarion.tables.suppression import entry

NY, TOKYO, UTC = "America/New_York", "Asia/Tokyo", "UTC"
DAY = 86400.0


def at(tz: str, y: int, mo: int, d: int, h: int, mi: int = 0, fold: int = 0) -> float:
    """The instant a wall clock in `tz` reads y-mo-d h:mi (fold=1: the second of a repeated hour)."""
    return datetime(y, mo, d, h, mi, fold=fold, tzinfo=ZoneInfo(tz)).timestamp()


def wall(t: float, tz: str) -> tuple[int, int, int, int, int]:
    local = datetime.fromtimestamp(t, ZoneInfo(tz))
    return local.year, local.month, local.day, local.hour, local.minute


def user(**kw: Any) -> UserProfile:
    fields: dict[str, Any] = {
        "client_id": "acme", "user_id": "u1", "email": "u1@example.com", "phone": "+14155550100",
        "apns_tokens": ["tok-a", "tok-b"], **kw,
    }  # fmt: skip
    return UserProfile(**fields)


def template(**kw: Any) -> TemplateVersion:
    fields: dict[str, Any] = {
        "client_id": "acme", "template_id": "sale", "version": 1, "email_subject": "Sale", "email_text": "20% off",
        "push_body": "20% off", "sms_body": "20% off", **kw,
    }  # fmt: skip
    return TemplateVersion(**fields)


def campaign(channels: list[str] | None = None, **kw: Any) -> Campaign:
    fields: dict[str, Any] = {
        "client_id": "acme", "campaign_id": "c1", "template_id": "sale", "channels": channels or ["email", "sms"],
        "audience": Audience(all=True), **kw,
    }  # fmt: skip
    return Campaign(**fields)


NOON = at(UTC, 2026, 6, 15, 12)  # a plain day, far from any DST change


def run(
    u: UserProfile | None = None,
    c: Campaign | None = None,
    t: TemplateVersion | None = None,
    now: float = NOON,
    suppressed: Mapping[str, str] | None = None,
    recent: Mapping[str, float] | None = None,
    cap: tuple[int, float] | None = None,
) -> Decision:
    return decide(u or user(), c or campaign(), t or template(), now, suppressed or {}, recent or {}, cap)


# -- reasons, in order ----------------------------------------------------------------------------


def test_a_reachable_user_gets_the_first_channel_now() -> None:
    d = run()
    assert (d.skip, d.channel, d.addresses, d.not_before, d.deferred_by) == (
        None, "email", ["u1@example.com"], 0.0, None)  # fmt: skip


def test_opted_out_comes_before_every_other_reason() -> None:
    u = user(promo_opt_out=True, channel_opt_out=["email", "sms"], email=None, phone=None)
    assert run(u, recent={"acme/other": NOON - 1}, cap=(1, DAY)).skip == "opted_out"


def test_critical_override_goes_through_opt_outs_but_not_the_rest() -> None:
    critical = template(critical_override=True)
    u = user(promo_opt_out=True, channel_opt_out=["email"])
    d = run(u, t=critical)
    assert (d.skip, d.channel) == (None, "email")
    assert run(u, t=critical, suppressed={entry("email", "u1@example.com"): "bounced"}).channel == "sms"
    both = {entry("email", "u1@example.com"): "bounced", entry("sms", "+14155550100"): "stop"}
    assert run(u, t=critical, suppressed=both).skip == "suppressed"
    assert run(u, t=critical, recent={"acme/other": NOON - 1}, cap=(1, DAY)).skip == "frequency_cap"
    assert run(u).skip == "opted_out"  # the same user, an ordinary template


def test_channel_opt_out_when_every_offered_channel_is_declined() -> None:
    u = user(channel_opt_out=["email", "sms"], email=None)  # no email either: channel_opt_out is told first
    assert run(u, suppressed={entry("sms", "+14155550100"): "stop"}).skip == "channel_opt_out"
    assert run(user(channel_opt_out=["email"])).channel == "sms"  # one declined: the next one


def test_no_content_when_the_template_has_none_for_the_offered_channels() -> None:
    email_only = template(push_body=None, sms_body=None)
    assert run(user(phone=None), campaign(["sms", "apns"]), email_only).skip == "no_content"  # not no_address


def test_no_address_when_no_channel_with_content_has_an_address() -> None:
    assert run(user(email=None, phone=None)).skip == "no_address"
    sms_only = template(email_subject=None, email_text=None)
    # email has no content, sms no address: the furthest any channel got is told
    assert run(user(phone=None), campaign(["email", "sms"]), sms_only).skip == "no_address"
    assert run(user(phone=None), campaign(["sms", "email"]), sms_only).skip == "no_address"


def test_suppressed_when_every_address_of_every_usable_channel_is() -> None:
    both = {entry("email", "u1@example.com"): "bounced", entry("sms", "+14155550100"): "stop"}
    assert run(suppressed=both).skip == "suppressed"
    # one suppressed, the other without an address: still suppressed, whichever comes first
    email = {entry("email", "u1@example.com"): "bounced"}
    assert run(user(phone=None), suppressed=email).skip == "suppressed"
    assert run(user(phone=None), campaign(["sms", "email"]), suppressed=email).skip == "suppressed"
    # suppression is told before the frequency cap
    assert run(suppressed=both, recent={"acme/other": NOON - 1}, cap=(1, DAY)).skip == "suppressed"


def test_frequency_cap_is_the_last_reason() -> None:
    d = run(recent={"acme/other": NOON - 60}, cap=(1, DAY))
    assert (d.skip, d.channel, d.addresses) == ("frequency_cap", None, [])


# -- channels in preference order -----------------------------------------------------------------


def test_the_campaigns_order_picks_the_channel() -> None:
    assert run(c=campaign(["sms", "email"])).channel == "sms"
    assert run(c=campaign(["email", "sms"])).channel == "email"
    assert run(user(email=None)).channel == "sms"  # no address: the next one
    suppressed = {entry("email", "u1@example.com"): "complained"}
    assert (run(suppressed=suppressed).channel, run(suppressed=suppressed).addresses) == ("sms", ["+14155550100"])
    no_sms = template(sms_body=None)
    assert run(c=campaign(["sms", "apns"]), t=no_sms).channel == "apns"  # no content: the next one


def test_a_channel_with_several_addresses_sends_to_the_unsuppressed_ones() -> None:
    d = run(c=campaign(["apns", "email"]), suppressed={entry("apns", "tok-a"): "Unregistered"})
    assert (d.channel, d.addresses) == ("apns", ["tok-b"])
    d = run(c=campaign(["apns", "email"]))
    assert (d.channel, d.addresses) == ("apns", ["tok-a", "tok-b"])


# -- quiet hours, in the user's time zone ---------------------------------------------------------


@pytest.mark.parametrize(
    ("local_now", "deferred_to"),
    [
        ((2026, 6, 15, 23, 0), (2026, 6, 16, 8, 0)),  # before midnight: the next morning
        ((2026, 6, 16, 3, 30), (2026, 6, 16, 8, 0)),  # after midnight: the same morning
        ((2026, 6, 15, 22, 0), (2026, 6, 16, 8, 0)),  # the start is inside the window
        ((2026, 6, 16, 7, 59), (2026, 6, 16, 8, 0)),
        ((2026, 6, 16, 8, 0), None),  # the end is not
        ((2026, 6, 15, 21, 59), None),
        ((2026, 6, 15, 12, 0), None),
    ],
)
def test_quiet_hours_that_wrap_midnight_defer_to_their_end(
    local_now: tuple[int, ...], deferred_to: tuple[int, ...] | None
) -> None:
    u = user(timezone=UTC, quiet_hours=QuietHours(start="22:00", end="08:00"))
    now = at(UTC, *local_now)
    d = run(u, now=now)
    assert d.skip is None and d.channel == "email"  # deferred, never dropped
    if deferred_to is None:
        assert (d.not_before, d.deferred_by) == (0.0, None)
    else:
        assert (wall(d.not_before, UTC), d.deferred_by) == (deferred_to, "quiet_hours")


def test_quiet_hours_within_one_day() -> None:
    u = user(quiet_hours=QuietHours(start="12:00", end="14:00"))
    assert wall(run(u, now=at(UTC, 2026, 6, 15, 13, 15)).not_before, UTC) == (2026, 6, 15, 14, 0)
    assert run(u, now=at(UTC, 2026, 6, 15, 14, 0)).not_before == 0.0
    assert run(u, now=at(UTC, 2026, 6, 15, 11, 59)).not_before == 0.0


def test_quiet_hours_are_the_users_local_time() -> None:
    now = at(UTC, 2026, 6, 15, 3)  # 23:00 the day before in New York (EDT), 12:00 in Tokyo
    quiet = QuietHours(start="22:00", end="08:00")
    in_ny = run(user(timezone=NY, quiet_hours=quiet), now=now)
    assert (wall(in_ny.not_before, NY), in_ny.deferred_by) == ((2026, 6, 15, 8, 0), "quiet_hours")
    assert in_ny.not_before - now == 9 * 3600
    in_tokyo = run(user(timezone=TOKYO, quiet_hours=quiet), now=now)
    assert (in_tokyo.not_before, in_tokyo.deferred_by) == (0.0, None)
    later = now + 12 * 3600  # 11:00 in New York, 00:00 in Tokyo
    assert run(user(timezone=NY, quiet_hours=quiet), now=later).not_before == 0.0
    asleep = run(user(timezone=TOKYO, quiet_hours=quiet), now=later)
    assert (wall(asleep.not_before, TOKYO), asleep.not_before - later) == ((2026, 6, 16, 8, 0), 8 * 3600)


def test_quiet_hours_over_a_dst_change_end_at_the_local_time() -> None:
    quiet = QuietHours(start="22:00", end="08:00")
    u = user(timezone=NY, quiet_hours=quiet)
    spring = at(NY, 2026, 3, 7, 23)  # the night the clocks go forward (02:00 -> 03:00)
    d = run(u, now=spring)
    assert wall(d.not_before, NY) == (2026, 3, 8, 8, 0)
    assert d.not_before - spring == 8 * 3600  # nine hours on the clock, eight elapsed
    fall = at(NY, 2026, 10, 31, 23)  # the night they go back (02:00 -> 01:00)
    d = run(u, now=fall)
    assert wall(d.not_before, NY) == (2026, 11, 1, 8, 0)
    assert d.not_before - fall == 10 * 3600


def test_a_window_edge_the_clock_skips_is_passed_when_the_clock_jumps() -> None:
    """On 2026-03-08 New York's clocks go from 01:59 EST to 03:00 EDT: 02:30 never shows.

    Quiet hours ending 02:30 are over at 03:00 EDT (07:00 UTC); a send window opening at
    02:30 is open from then. Not an hour later, at 03:30, which 02:30 read with the old offset gives.
    """
    now = at(NY, 2026, 3, 8, 1, 45)
    jump = at(UTC, 2026, 3, 8, 7)
    assert wall(jump, NY) == (2026, 3, 8, 3, 0)
    assert next_outside(now, NY, "01:00", "02:30") == jump
    assert next_inside(now, NY, "02:30", "05:00") == jump
    d = run(user(timezone=NY, quiet_hours=QuietHours(start="01:00", end="02:30")), now=now)
    assert (d.not_before, d.deferred_by) == (jump, "quiet_hours")


def test_a_repeated_hour_is_read_as_the_clock_shows_it() -> None:
    """On 2026-11-01 New York's clocks show 01:00-01:59 twice (EDT, then EST)."""
    first, second = at(NY, 2026, 11, 1, 1, 20), at(NY, 2026, 11, 1, 1, 20, fold=1)
    assert second - first == 3600
    assert next_outside(first, NY, "01:00", "01:30") == at(NY, 2026, 11, 1, 1, 30)
    assert next_outside(second, NY, "01:00", "01:30") == at(NY, 2026, 11, 1, 1, 30, fold=1)
    assert next_outside(at(NY, 2026, 11, 1, 1, 40), NY, "01:00", "01:30") == at(NY, 2026, 11, 1, 1, 40)


def test_windows_leave_times_outside_them_alone() -> None:
    t = at(TOKYO, 2026, 6, 15, 12, 34)
    assert next_outside(t, TOKYO, "22:00", "08:00") == t
    assert next_inside(t, TOKYO, "09:00", "17:00") == t
    assert next_inside(t, TOKYO, "10:00", "10:00") == t  # start == end: the whole day
    assert next_outside(t, TOKYO, "10:00", "10:00") == t
    assert next_inside(t, "Not/A_Zone", "13:00", "14:00") == at(UTC, 2026, 6, 15, 13)  # junk zone: UTC


# -- the campaign's send window -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "local_now", "deferred_to"),
    [
        (("09:00", "17:00"), (2026, 6, 15, 20, 0), (2026, 6, 16, 9, 0)),  # after it: tomorrow's opening
        (("09:00", "17:00"), (2026, 6, 15, 6, 0), (2026, 6, 15, 9, 0)),  # before it: today's
        (("09:00", "17:00"), (2026, 6, 15, 17, 0), (2026, 6, 16, 9, 0)),  # its end is outside it
        (("09:00", "17:00"), (2026, 6, 15, 9, 0), None),
        (("20:00", "02:00"), (2026, 6, 15, 12, 0), (2026, 6, 15, 20, 0)),  # wrapping midnight
        (("20:00", "02:00"), (2026, 6, 16, 1, 30), None),
        (("20:00", "02:00"), (2026, 6, 16, 2, 0), (2026, 6, 16, 20, 0)),
    ],
)
def test_the_send_window_defers_to_its_next_opening(
    window: tuple[str, str], local_now: tuple[int, ...], deferred_to: tuple[int, ...] | None
) -> None:
    c = campaign(window=SendWindow(start=window[0], end=window[1]))
    d = run(user(timezone=TOKYO), c, now=at(TOKYO, *local_now))
    assert d.skip is None
    if deferred_to is None:
        assert (d.not_before, d.deferred_by) == (0.0, None)
    else:
        assert (wall(d.not_before, TOKYO), d.deferred_by) == (deferred_to, "send_window")


def test_the_send_window_is_each_users_local_time() -> None:
    c = campaign(window=SendWindow(start="09:00", end="17:00"))
    now = at(UTC, 2026, 6, 15, 14)  # 10:00 in New York, 23:00 in Tokyo
    assert run(user(timezone=NY), c, now=now).not_before == 0.0
    assert wall(run(user(timezone=TOKYO), c, now=now).not_before, TOKYO) == (2026, 6, 16, 9, 0)


@pytest.mark.parametrize(
    ("quiet", "window", "local_now", "deferred_to", "by"),
    [
        # the window opens during quiet hours: at their end
        (("08:00", "10:00"), ("09:00", "17:00"), (2026, 6, 15, 7, 0), (2026, 6, 15, 10, 0), "send_window"),
        # quiet now; their end falls inside the window
        (("22:00", "08:00"), ("07:00", "12:00"), (2026, 6, 15, 23, 0), (2026, 6, 16, 8, 0), "quiet_hours"),
        # quiet now; their end is before the window: its opening that day
        (("22:00", "08:00"), ("20:00", "23:00"), (2026, 6, 15, 23, 30), (2026, 6, 16, 20, 0), "quiet_hours"),
        # past the window, whose next opening is quiet: the end of those quiet hours
        (("16:00", "10:00"), ("09:00", "17:00"), (2026, 6, 15, 17, 30), (2026, 6, 16, 10, 0), "quiet_hours"),
        # inside the window but quiet: the end of the quiet hours, still inside the window
        (("12:00", "13:00"), ("09:00", "17:00"), (2026, 6, 15, 12, 15), (2026, 6, 15, 13, 0), "quiet_hours"),
        (("12:00", "13:00"), ("09:00", "17:00"), (2026, 6, 15, 13, 0), None, None),
    ],
)
def test_quiet_hours_and_the_send_window_together(
    quiet: tuple[str, str],
    window: tuple[str, str],
    local_now: tuple[int, ...],
    deferred_to: tuple[int, ...] | None,
    by: str | None,
) -> None:
    u = user(timezone=NY, quiet_hours=QuietHours(start=quiet[0], end=quiet[1]))
    c = campaign(window=SendWindow(start=window[0], end=window[1]))
    d = run(u, c, now=at(NY, *local_now))
    if deferred_to is None:
        assert (d.not_before, d.deferred_by) == (0.0, None)
    else:
        assert (wall(d.not_before, NY), d.deferred_by) == (deferred_to, by)


# -- the frequency cap ----------------------------------------------------------------------------


def test_the_cap_counts_other_campaigns_inside_the_window_only() -> None:
    cap = (2, DAY)
    assert run(recent={"acme/a": NOON - 100}, cap=cap).skip is None  # one other: under the cap
    assert run(recent={"acme/a": NOON - 100, "acme/b": NOON - 200}, cap=cap).skip == "frequency_cap"
    old = {"acme/a": NOON - 100, "acme/b": NOON - DAY}  # exactly a window ago: out of it
    assert run(recent=old, cap=cap).skip is None
    itself = {"acme/a": NOON - 100, "acme/c1": NOON - 50}  # this campaign, expanded again: not another one
    assert run(recent=itself, cap=cap).skip is None
    assert run(recent={"acme/a": NOON - 100, "acme/b": NOON - 200}).skip is None  # no cap: not counted


def test_the_cap_skips_a_user_even_during_quiet_hours() -> None:
    u = user(quiet_hours=QuietHours(start="22:00", end="08:00"))
    night = at(UTC, 2026, 6, 15, 23)
    assert run(u, now=night, recent={"acme/a": night - 60}, cap=(1, DAY)).skip == "frequency_cap"


def test_a_deferred_campaign_counts_when_it_reaches_the_user() -> None:
    """Quiet hours until 08:00 defer a campaign expanded at 23:00: it counts at 08:00, so another at
    08:30 is capped (an hour's cap), and one expanded for 08:00 counts one sent at 07:30."""
    u = user(quiet_hours=QuietHours(start="22:00", end="08:00"))
    night, morning = at(UTC, 2026, 6, 15, 23), at(UTC, 2026, 6, 16, 8)
    cap = (1, 3600.0)
    deferred = run(u, now=night, cap=cap)
    assert deferred.not_before == morning
    recent = remember({}, "acme/c1", deferred.not_before or night, cap[1], night)
    assert recent == {"acme/c1": morning}
    later = run(u, c=campaign(campaign_id="c2"), now=morning + 1800, recent=recent, cap=cap)
    assert later.skip == "frequency_cap"
    assert run(u, c=campaign(campaign_id="c2"), now=morning + 3600, recent=recent, cap=cap).skip is None
    # the other way round: sent at 07:30 (no quiet hours for it), then one deferred to 08:00
    sent_early = {"acme/c0": morning - 1800}
    assert run(u, now=night, recent=sent_early, cap=cap).skip == "frequency_cap"
    # one sent at 22:30 is 9.5 hours before this one reaches the user at 08:00: not inside the hour
    assert run(u, now=night, recent={"acme/c0": night - 1800}, cap=cap).skip is None
    # a send time before now is never dropped by remembering a later one
    assert remember(sent_early, "acme/c1", morning, cap[1], morning - 1900) == {**sent_early, "acme/c1": morning}


def test_remember_adds_the_campaign_drops_the_old_and_is_idempotent() -> None:
    recent = {"acme/old": NOON - DAY - 1, "acme/a": NOON - 100}
    kept = remember(recent, "acme/c1", NOON, DAY)
    assert kept == {"acme/a": NOON - 100, "acme/c1": NOON}
    assert recent == {"acme/old": NOON - DAY - 1, "acme/a": NOON - 100}  # the caller's dict is left alone
    again = remember(kept, "acme/c1", NOON + 30, DAY)  # a re-expansion keeps the first time
    assert again == kept
    assert remember(again, "acme/c1", NOON + 30, DAY) == again


def test_a_users_campaigns_over_days_under_a_cap_of_two_a_day() -> None:
    cap = (2, DAY)
    recent: dict[str, float] = {}
    sent = []
    for i, when in enumerate([NOON, NOON + 3600, NOON + 7200, NOON + 7200 + 60, NOON + DAY + 1]):
        c = campaign(campaign_id=f"c{i}")
        d = decide(user(), c, template(), when, {}, recent, cap)
        if d.skip is None:
            recent = remember(recent, c.key, when, cap[1])
            sent.append(i)
        else:
            assert d.skip == "frequency_cap"
    assert sent == [0, 1, 4]  # the first a day later no longer counts
