"""The `make run` demo: a few critical notifications through the whole pipeline, then a small campaign."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from clarion.providers.simulator import Fault, Simulator

ALICE = {
    "user_id": "alice",
    "email": "alice@example.com",
    "phone": "+14155550100",
    "apns_tokens": ["a1" * 32],
    "fcm_tokens": ["fcm-token-alice-0123456789"],
    "locale": "en",
    "timezone": "Europe/Paris",
}
BOB = {"user_id": "bob", "locale": "en"}
WELCOME = {
    "template_id": "welcome",
    "version": 1,
    "email_subject": "Welcome, {{ name }}",
    "email_text": "Hi {{ name }}, your code is {{ code }}.",
    "email_html": "<p>Hi <b>{{ name }}</b>, your code is {{ code }}.</p>",
    "push_title": "Welcome {{ name }}",
    "push_body": "Your code is {{ code }}",
    "sms_body": "{{ name }}, your code is {{ code }}",
}
PARAMS = {"name": "Alice", "code": "481516"}
CASES = [
    ("email to alice", {"idempotency_key": "demo-1", "user_id": "alice", "channels": ["email"]}),
    ("push to alice (apns + fcm)", {"idempotency_key": "demo-2", "user_id": "alice", "channels": ["apns", "fcm"]}),
    ("sms to alice, provider fails twice", {"idempotency_key": "demo-3", "user_id": "alice", "channels": ["sms"]}),
    ("email to alice again (same key)", {"idempotency_key": "demo-1", "user_id": "alice", "channels": ["email"]}),
    ("email to bob (no address)", {"idempotency_key": "demo-4", "user_id": "bob", "channels": ["email"]}),
]
TERMINAL = {"sent", "delivered", "failed", "dead_lettered", "duplicate", "partially_sent"}


async def run_demo(api_url: str, sim: Simulator, api_key: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Send the demo traffic with `api_key`, wait for every outcome, print a table; returns the rows."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(raise_for_status=False, headers=headers) as http:
        await _post(http, f"{api_url}/template", WELCOME)
        for user in (ALICE, BOB):
            await _post(http, f"{api_url}/users", user)
        await asyncio.sleep(1.0)  # users are a separate topic: let the worker fold them first
        sim.state.faults.clear()
        sim.state.faults.append(Fault("sms", "transient", ALICE["phone"], times=2))
        rows = []
        for label, case in CASES:
            sent_at = time.time()
            body = await _post(
                http, f"{api_url}/notif", {"template_id": "welcome", "params": PARAMS, **case}
            )
            rows.append({"case": label, "id": body["notification_id"], "posted": sent_at})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for row in rows:
                async with http.get(f"{api_url}/notif/{row['id']}") as resp:
                    row["doc"] = await resp.json() if resp.status == 200 else {"status": "(pending)"}
            if all(row["doc"].get("status") in TERMINAL for row in rows):
                break
            await asyncio.sleep(0.25)
    for row in rows:
        receipts = [d for d in sim.state.deliveries if d.get("nid") == row["id"]]
        row["receipts"] = len(receipts)
        row["latency_ms"] = round((min(r["at"] for r in receipts) - row["posted"]) * 1000) if receipts else None
    print_table(rows)
    return rows


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body) as resp:
        data = await resp.json()
        if resp.status >= 300:
            raise RuntimeError(f"POST {url} -> {resp.status} {data}")
        return data


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("case", 36), ("notification_id", 36), ("status", 14), ("attempts", -8), ("receipts", -8)
    header = " ".join(f"{name:>{-w}}" if w < 0 else f"{name:{w}}" for name, w in columns)
    header += f" {'POST->receipt':>13}  detail"
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        doc = row.get("doc", {})
        detail = (doc.get("duplicate_of") and f"duplicate of {doc['duplicate_of']}") or "; ".join(
            f"{k}: {v}" for k, v in (doc.get("failures") or {}).items()
        )
        latency = f"{row['latency_ms']} ms" if row.get("latency_ms") is not None else "-"
        print(
            f"{row['case']:36} {row['id']:36} {doc.get('status', '?'):14} {doc.get('attempts', 0):>8} "
            f"{row['receipts']:>8} {latency:>13}  {detail}"
        )
    print()


SALE = {
    "template_id": "winter-sale",
    "version": 1,
    "email_subject": "{{ pct }}% off this weekend",
    "email_text": "Hi {{ user.first_name | default('there') }}, everything is {{ pct }}% off until Sunday.",
    "push_title": "Winter sale",
    "push_body": "{{ pct }}% off until Sunday",
    "sms_body": "Winter sale: {{ pct }}% off until Sunday. Reply STOP to opt out",
}
PROMO_USERS = 300


def promo_users() -> list[dict[str, Any]]:
    """A small audience: most by email, some push-only, some opted out, some asleep (quiet hours now)."""
    now = time.gmtime()
    asleep = {"start": f"{(now.tm_hour - 1) % 24:02d}:00", "end": f"{(now.tm_hour + 1) % 24:02d}:00"}
    users = []
    for i in range(PROMO_USERS):
        user: dict[str, Any] = {"user_id": f"shopper-{i}", "attributes": {"first_name": f"Shopper{i}", "visits": i % 7},
                                "tags": ["newsletter"] if i % 3 else ["newsletter", "vip"]}  # fmt: skip
        if i % 10 == 0:
            user["apns_tokens"] = [f"{i:064x}"]  # no email: falls back to push
        else:
            user["email"] = f"shopper-{i}@example.com"
        if i % 25 == 1:
            user["promo_opt_out"] = True
        if i % 50 == 2:
            user |= {"timezone": "UTC", "quiet_hours": asleep}
        users.append(user)
    return users


async def run_promo_demo(api_url: str, sim: Simulator, api_key: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """A campaign scheduled 3 s ahead for the users with visits >= 2; prints its progress until it has sent."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(raise_for_status=False, headers=headers) as http:
        await _post(http, f"{api_url}/template", SALE)
        lines = "\n".join(orjson.dumps(u).decode() for u in promo_users())
        async with http.post(f"{api_url}/users/bulk", data=lines,
                             headers={"Content-Type": "application/x-ndjson"}) as resp:  # fmt: skip
            imported = await resp.json()
        send_at = time.time() + 3
        campaign = {
            "campaign_id": "winter-sale", "template_id": "winter-sale", "channels": ["email", "apns"],
            "audience": {"where": "attributes.visits >= 2"}, "params": {"pct": 30}, "send_at": send_at,
        }  # fmt: skip
        await _post(http, f"{api_url}/promo", campaign)
        print(f"campaign winter-sale: {imported.get('accepted')} users imported, scheduled for "
              f"{time.strftime('%H:%M:%S', time.localtime(send_at))} to users with attributes.visits >= 2")  # fmt: skip
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            async with http.get(f"{api_url}/promo/winter-sale") as resp:
                body = await resp.json() if resp.status == 200 else body
            c = body.get("counters", {})
            print(f"  {time.strftime('%H:%M:%S')} {body.get('state', '?'):10} targeted {c.get('targeted', 0):4} "
                  f"sent {c.get('sent', 0):4} deferred {c.get('deferred', 0):3} "
                  f"skipped {c.get('skipped', {})}")  # fmt: skip
            if body.get("state") == "done" or (
                body.get("state") == "sending" and c.get("sent", 0) + c.get("deferred", 0) >= c.get("executions", 1)
            ):
                break
            await asyncio.sleep(1.0)
    late = body.get("started_at", 0) - send_at if body.get("started_at") else None
    print(f"started {late:.2f}s after send_at" if late is not None else "not started",
          "(deferred users wait for their quiet hours to end)")  # fmt: skip
    return body
