"""The dashboard at /ui on the real stack: its data endpoints need the key and show the key's client's
data only, and in headless Chromium a notification sent over the API shows up on the page.

The browser test saves its screenshot as docs/dashboard.png (the README shows it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from clarion.providers.simulator import Fault
from clarion.web import ui_data
from clarion.web.ui_data import Feeds
from tests.api_stack import USER, Stack, api_stack_fixture
from tests.cdp import Page, chromium

pytestmark = pytest.mark.asyncio(loop_scope="module")
stack = api_stack_fixture(promo_partitions=2, promo_tick_s=0.05)

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
DATA_ENDPOINTS = [  # (method, path, body, scope)
    ("GET", "/ui/api/me", None, "read"),
    ("GET", "/ui/api/lanes", None, "read"),
    ("GET", "/ui/api/outcomes", None, "read"),
    ("GET", "/ui/api/dlq", None, "read"),
    ("POST", "/ui/api/dlq/replay", {"ids": ["0:0"]}, "send"),
    ("GET", "/ui/api/templates", None, "templates"),
    ("GET", "/ui/api/templates/otp/1", None, "templates"),
    ("POST", "/ui/api/templates/preview", {"template_id": "otp", "channel": "sms"}, "templates"),
    ("GET", "/ui/api/users", None, "read"),
    ("GET", "/ui/api/suppressed", None, "read"),
    ("GET", "/ui/api/campaigns", None, "read"),
]
RIVAL_TEMPLATE = {"template_id": "otp", "version": 1, "sms_body": "Rival {{ code }}"}


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


async def send(stack: Stack, channels: list[str], user_id: str = "alice", key: str = "", **kw: Any) -> str:
    status, body = await stack.call("POST", "/notif", stack.notif(channels=channels, user_id=user_id, **kw), key=key)
    assert status == 202, body
    return body["notification_id"]


async def rows(stack: Stack, path: str, key: str = "") -> list[dict[str, Any]]:
    status, body = await stack.call("GET", path, key=key)
    assert status == 200, body
    return body["rows"]


async def test_the_page_is_public_and_every_data_endpoint_needs_the_key(stack: Stack) -> None:
    for path, content_type in (("/ui", "text/html"), ("/ui/app.js", "application/javascript"),
                               ("/ui/app.css", "text/css")):  # fmt: skip
        async with stack.http.get(stack.url + path) as resp:
            assert resp.status == 200 and resp.content_type == content_type, path
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    async with stack.http.get(stack.url + "/ui/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/ui"
    for method, path, body, scope in DATA_ENDPOINTS:
        assert (await stack.call(method, path, body, key=None))[0] == 401, path
        assert (await stack.call(method, path, body, key="clk_0123456789abcdef_" + "x" * 43))[0] == 401, path
        others = await stack.new_key("web", [s for s in ("send", "users", "templates", "read") if s != scope])
        assert (await stack.call(method, path, body, key=others))[0] == 403, path


async def test_each_client_sees_only_its_own_outcomes_templates_and_users(stack: Stack) -> None:
    rival = await stack.new_key("rival")
    assert (await stack.call("POST", "/template", RIVAL_TEMPLATE, key=rival))[0] == 201
    assert (await stack.call("POST", "/users", {**USER, "email": "zed@rival.example"}, key=rival))[0] == 202
    mine = await send(stack, ["email"])
    theirs = await send(stack, ["sms"], key=rival)
    await stack.wait_status(mine, {"sent"})
    await stack.wait_status(theirs, {"sent"}, key=rival)

    async def outcomes(key: str = "", **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        status, body = await stack.call("GET", f"/ui/api/outcomes?{query}", key=key)
        assert status == 200, body
        return body["outcomes"]

    got = await until(lambda: outcomes(notification_id=mine, status="sent"), "my sent outcome on the dashboard")
    assert got[0]["channel"] == "email" and got[0]["lane"] == "critical" and got[0]["user_id"] == "alice"
    assert {o["status"] for o in await outcomes(notification_id=mine)} == {"accepted", "sent"}
    assert await outcomes(notification_id=mine, channel="sms") == []
    assert await outcomes(notification_id=theirs) == []  # the rival's, under my key: nothing
    assert await outcomes(rival, notification_id=mine) == []
    assert await until(lambda: outcomes(rival, notification_id=theirs, status="sent"), "the rival's own")
    me = {o["notification_id"] for o in await outcomes(limit="500")}
    assert theirs not in me and all(nid.startswith("n") for nid in me)

    status, lanes = await stack.call("GET", "/ui/api/lanes")
    assert status == 200
    counts = {(c["lane"], c["channel"], c["status"]): c["n"] for c in lanes["counts"]}
    assert counts[("critical", "email", "sent")] >= 1 and ("critical", "sms", "sent") not in counts
    email = next(lat for lat in lanes["latency"] if lat["channel"] == "email")
    assert email["n"] >= 1 and 0 <= email["p50_ms"] <= email["max_ms"] < 10_000

    status, me_body = await stack.call("GET", "/ui/api/me")
    assert me_body["client_id"] == "web" and me_body["replay"] is True

    # templates: the same id in both clients, each sees and renders its own
    status, listed = await stack.call("GET", "/ui/api/templates")
    assert [t["template_id"] for t in listed["templates"]] == ["otp"]
    assert listed["templates"][0]["channels"] == ["email", "sms"]
    preview = {"template_id": "otp", "version": 1, "channel": "sms", "params": {"code": "4321"}}
    assert (await stack.call("POST", "/ui/api/templates/preview", preview))[1]["rendered"] == {"body": "Code 4321"}
    assert (await stack.call("POST", "/ui/api/templates/preview", preview, key=rival))[1]["rendered"] == {
        "body": "Rival 4321"
    }
    status, body = await stack.call("POST", "/ui/api/templates/preview", {**preview, "params": {}})
    assert status == 422 and "code" in body["error"]  # StrictUndefined names what is missing
    status, body = await stack.call("POST", "/ui/api/templates/preview", {**preview, "template_id": "nope"})
    assert status == 404
    status, body = await stack.call("GET", "/ui/api/templates/otp/latest")
    assert status == 200 and body["parts"]["sms_body"] == "Code {{ code }}"

    # users: masked, and only the key's client's
    users = await until(lambda: rows(stack, "/ui/api/users"), "alice in the users view")
    assert users == [{"user_id": "alice", "email": "a***@example.com", "phone": "***00", "apns_tokens": 0,
                      "fcm_tokens": 0, "locale": "en", "timezone": "UTC", "tags": [], "attributes": [],
                      "promo_opt_out": False, "channel_opt_out": [], "quiet_hours": None}]  # fmt: skip
    theirs_users = await until(lambda: rows(stack, "/ui/api/users", key=rival), "the rival's users")
    assert [u["email"] for u in theirs_users] == ["z***@rival.example"]


async def test_suppression_and_campaign_views(stack: Stack) -> None:
    # the simulator's Twilio refuses +15005550004 with 21610 (unsubscribed): the address is suppressed
    assert (await stack.call("POST", "/users", {"user_id": "dave", "phone": "+15005550004"}))[0] == 202
    assert (await stack.call("POST", "/users", {"user_id": "bob", "email": "bob@example.net"}))[0] == 202
    nid = await send(stack, ["sms"], user_id="dave")
    await stack.wait_status(nid, {"failed"})
    suppressed = await until(lambda: rows(stack, "/ui/api/suppressed"), "dave's number suppressed")
    assert suppressed[0]["user_id"] == "dave"
    entry = suppressed[0]["entries"][0]
    assert entry["channel"] == "sms" and entry["address"] == "***04" and "21610" in entry["reason"]
    assert await rows(stack, "/ui/api/suppressed", key=await stack.new_key("rival2")) == []

    campaign = {"campaign_id": "welcome", "template_id": "otp", "channels": ["email"], "audience": {"all": True},
                "params": {"code": "0000"}}  # fmt: skip
    assert (await stack.call("POST", "/promo", campaign))[0] == 202

    async def done() -> list[dict[str, Any]]:
        listed = await rows(stack, "/ui/api/campaigns")
        return [c for c in listed if c["campaign_id"] == "welcome" and c["state"] == "done"]

    (welcome,) = await until(done, "the campaign done in the campaigns view", 30)
    assert welcome["counters"]["sent"] == 2  # alice and bob have an email; dave does not
    assert welcome["counters"]["skipped"] == {"no_address": 1} or welcome["counters"]["targeted"] == 3
    page = await stack.call("GET", "/ui/api/users?limit=1")
    assert page[1]["more"] is True and [u["user_id"] for u in page[1]["rows"]] == ["alice"]
    assert page[1]["complete"] is True  # every users partition was read
    after = await stack.call("GET", "/ui/api/users?limit=5&after=alice")
    assert [u["user_id"] for u in after[1]["rows"]] == ["bob", "dave"]


async def test_the_topics_are_read_only_while_a_dashboard_asks(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    nid = await send(stack, ["sms"])
    await stack.wait_status(nid, {"sent"})
    monkeypatch.setattr(ui_data, "IDLE_S", 0.3)
    feeds = Feeds(stack.settings)
    try:
        await feeds.ensure()  # reads from a little before the end: what was sent before is there
        assert len(feeds.tails) == 2
        assert [o["status"] for o in feeds.outcomes.recent("web", notification_id=nid)] == ["sent", "accepted"]

        async def stopped() -> bool:
            return not feeds.tails

        await until(stopped, "the tails stopped when idle", 5)
        await feeds.ensure()  # asked again: read again, from the same place
        assert len(feeds.tails) == 2 and len(feeds.outcomes.recent("web", notification_id=nid)) == 2
    finally:
        await feeds.close()
    assert feeds.tails == []


async def text(page: Page, selector: str) -> str:
    return await page.evaluate(f"document.querySelector({orjson.dumps(selector).decode()}).textContent")


async def test_a_notification_sent_over_the_api_appears_on_the_dashboard(stack: Stack, tmp_path: Path) -> None:
    nid = await send(stack, ["email"])
    await stack.wait_status(nid, {"sent"})
    stack.sim.state.faults.append(Fault("sms", "transient", USER["phone"]))  # retries exhausted: a dead letter
    dead = await send(stack, ["sms"])
    await stack.wait_status(dead, {"dead_lettered"})

    async with chromium(tmp_path / "chromium") as page:
        await page.goto(stack.url + "/ui")
        await page.wait_for("!document.querySelector('#login').hidden", what="the key form")
        await page.evaluate(f"document.querySelector('#key').value = {orjson.dumps(stack.key).decode()}")
        await page.evaluate("document.querySelector('#login-form').requestSubmit()")
        await page.wait_for("!document.querySelector('#dashboard').hidden", what="the dashboard")
        assert await page.evaluate("sessionStorage.getItem('clarion.key')") == stack.key
        assert "client web" in await text(page, "#client")

        # the notification sent before the page opened, in recent outcomes
        await page.wait_for(f"document.querySelector('#outcomes tbody').textContent.includes('{nid}')",
                            what=f"{nid} in recent outcomes")  # fmt: skip
        # and one sent while it is open
        live = await send(stack, ["email"], params={"code": "5555"})
        await page.wait_for(f"document.querySelector('#outcomes tbody').textContent.includes('{live}')",
                            what=f"{live} in recent outcomes")  # fmt: skip
        await page.wait_for("document.querySelector('#lanes tbody').textContent.includes('email')", what="lanes")

        # filters: only failed ones leave the email notification out
        await page.evaluate("const s = document.querySelector('#outcome-filters [name=status]'); s.value = 'sent';"
                            "s.dispatchEvent(new Event('input', {bubbles: true}))")  # fmt: skip
        await page.wait_for(f"""(() => {{ const t = document.querySelector('#outcomes tbody').textContent;
                                return t.includes('{live}') && !t.includes('accepted'); }})()""",
                            what="the status filter")  # fmt: skip

        # the dead letter, replayed with its button once the provider is back
        await page.wait_for(f"""[...document.querySelectorAll('#dlq tbody tr')].some(
            r => r.textContent.includes('{dead}') && r.querySelector('button'))""", what="the dead letter")
        stack.sim.state.faults.clear()
        await page.evaluate(f"""[...document.querySelectorAll('#dlq tbody tr')].find(
            r => r.textContent.includes('{dead}')).querySelector('button').click()""")
        await page.wait_for(f"""[...document.querySelectorAll('#dlq tbody tr')].some(
            r => r.textContent.includes('{dead}') && r.textContent.includes('replayed'))""", what="replayed")

        async def delivered() -> bool:
            return any(d["nid"] == dead for d in stack.sim.state.deliveries)

        await until(delivered, "the replayed delivery sent")
        letters = (await stack.call("GET", "/ui/api/dlq"))[1]["letters"]
        (letter,) = [d for d in letters if d["notification_id"] == dead]
        assert letter["source"] == "critical.sms" and letter["reason"].startswith("retries_exhausted")
        rival = await stack.new_key("rival3")
        assert (await stack.call("GET", "/ui/api/dlq", key=rival))[1]["letters"] == []
        status, body = await stack.call("POST", "/ui/api/dlq/replay", {"ids": [letter["id"]]}, key=rival)
        assert status == 404, body  # another client's dead letter is as good as unknown

        # the template preview
        await page.wait_for("document.querySelector('#preview-form [name=channel]').options.length > 0",
                            what="the template's channels")  # fmt: skip
        await page.evaluate("""(() => { const f = document.querySelector('#preview-form');
            f.channel.value = 'email'; f.params.value = '{"code": "4321"}'; f.requestSubmit(); })()""")
        await page.wait_for("document.querySelector('#template-preview').textContent.includes('Your code: 4321')",
                            what="the rendered preview")  # fmt: skip

        # a status from the table views, by clicking the notification id
        await page.evaluate(f"""[...document.querySelectorAll('#outcomes a.nid')].find(
            a => a.textContent === '{live}').click()""")
        await page.wait_for("document.querySelector('#status-view').textContent.includes('sent')", what="status")
        assert live in await text(page, "#status-view")
        # users, masked
        await page.evaluate("document.querySelector('#tables [data-tab=users]').click()")
        await page.wait_for("document.querySelector('#users-table tbody').textContent.includes('a***@example.com')",
                            what="masked users")  # fmt: skip
        assert "alice@example.com" not in await page.evaluate("document.body.textContent")

        await page.evaluate("(() => { const s = document.querySelector('#outcome-filters [name=status]');"
                            "s.value = ''; s.dispatchEvent(new Event('input', {bubbles: true})); })()")  # fmt: skip
        await page.wait_for("document.querySelector('#outcomes tbody').textContent.includes('accepted')",
                            what="the filter cleared")  # fmt: skip
        await asyncio.sleep(2.5)  # one more poll: the lanes show rates between two polls
        png = await page.screenshot()
        assert page.errors == [], page.errors
    await asyncio.to_thread(_save, png)


def _save(png: bytes) -> None:
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(png)
