"""`clarion keys create|list|revoke`: API keys, written to the api_keys topic.

The key string is printed once, at creation; the topic keeps only its SHA-256.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from clarion.schemas.codec import encode
from clarion.schemas.records import ApiKey
from clarion.schemas.validation import ID_ERROR, is_id
from clarion.tables.api_keys import SCOPES, KeysView, mint
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.settings import Settings


def parse_scopes(text: str) -> list[str]:
    """`send,users` -> ["send", "users"]; ValueError naming an unknown scope."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {text!r}")
    return scopes


async def _write(settings: Settings, record: ApiKey) -> None:
    spec = catalog(settings)["api_keys"]
    await ensure_topics(settings.bootstrap_servers, [spec])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(spec.topic, encode(record), key=record.key_id.encode())
    finally:
        await producer.stop()


async def create_key(settings: Settings, client_id: str, scopes: list[str], name: str = "") -> tuple[str, ApiKey]:
    """Mint a key for `client_id` and store its record; returns the key string (shown once) and the record."""
    if not is_id(client_id):
        raise ValueError(f"client_id {ID_ERROR}")
    key, record = mint(client_id, scopes, time.time(), name)
    await _write(settings, record)
    return key, record


async def list_keys(settings: Settings) -> list[ApiKey]:
    spec = catalog(settings)["api_keys"]
    await ensure_topics(settings.bootstrap_servers, [spec])
    view = KeysView(settings.bootstrap_servers, spec.topic, settings.broker_quirks)
    await view.start()
    try:
        return sorted(view.values(), key=lambda k: (k.client_id, k.created_at))
    finally:
        await view.stop()


async def revoke_key(settings: Settings, key_id: str) -> ApiKey | None:
    """Mark a key revoked (every process stops accepting it within about a second); None if unknown."""
    record = next((k for k in await list_keys(settings) if k.key_id == key_id), None)
    if record is None:
        return None
    if record.revoked_at is None:
        record.revoked_at = time.time()
        await _write(settings, record)
    return record
