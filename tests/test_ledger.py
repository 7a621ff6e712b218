"""The delivery ledger, on a real Redis server and in-process."""

from __future__ import annotations

import uuid

import pytest

from clarion.tables.ledger import CLAIMED, IN_FLIGHT, SENT, LocalLedger, RedisLedger


@pytest.fixture(params=["redis", "local"])
async def ledger(request, redis_server):
    if request.param == "redis":
        led = RedisLedger(redis_server.url, sent_ttl_s=60, prefix=uuid.uuid4().hex)
    else:
        led = LocalLedger(sent_ttl_s=60)
    yield led
    await led.close()


async def test_claim_send_and_replay(ledger) -> None:
    assert await ledger.claim("d1") == (CLAIMED, None)
    assert await ledger.claim("d1") == (IN_FLIGHT, None)
    await ledger.mark_sent("d1", "pm-1")
    assert await ledger.claim("d1") == (SENT, "pm-1")


async def test_release_lets_a_retry_claim_again(ledger) -> None:
    assert (await ledger.claim("d2"))[0] == CLAIMED
    await ledger.release("d2")
    assert (await ledger.claim("d2"))[0] == CLAIMED


async def test_local_ledger_is_bounded() -> None:
    led = LocalLedger(sent_ttl_s=60, max_entries=2)
    for d in ("a", "b", "c"):
        await led.mark_sent(d, d)
    assert (await led.claim("a"))[0] == CLAIMED
    assert (await led.claim("c"))[0] == SENT
