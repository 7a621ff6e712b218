"""Firebase Cloud Messaging HTTP v1 client, with OAuth2 access tokens minted from a service account."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC
from functools import partial
from typing import Any

import google.auth.transport.urllib3
import orjson
import urllib3
from google.auth.exceptions import GoogleAuthError, RefreshError
from google.oauth2 import service_account

from clarion.providers.base import (
    Answer,
    AuthFailure,
    Delivered,
    HttpProvider,
    OutboundMessage,
    SendResult,
    TransientFailure,
)
from clarion.providers.errors import Verdict, failure, lookup
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.providers.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

def error_code(status: int, body: dict[str, Any]) -> tuple[str, Verdict]:
    """An error answer's code (FcmError errorCode, else the rpc status) and its verdict (errors.py)."""
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("details")
    codes = [d.get("errorCode") for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    codes = [*(c for c in codes if isinstance(c, str)), str(error.get("status", ""))]
    (_, answer), verdict = lookup("fcm", status, *codes)
    return (answer if answer in codes else next((c for c in codes if c), "UNKNOWN")), verdict


def outcome(answer: Answer | TransientFailure) -> SendResult:
    if isinstance(answer, TransientFailure):
        return answer
    body = answer.json()
    if answer.status == 200:
        return Delivered(str(body.get("name", "")))
    code, verdict = error_code(answer.status, body)
    return failure(verdict, f"{answer.status} {code}", answer.headers)


class ServiceAccountTokens:
    """OAuth2 access tokens minted from a service-account key file with google-auth.

    Sends read the current token. The first send that finds it close to expiry (within
    `refresh_margin_s`, or a quarter of its lifetime if that is shorter) starts a refresh
    in a thread, since google-auth blocks; one refresh runs at a time and everyone who needs
    a token meanwhile shares it. A send waits only when no valid token exists (at start, or
    after an idle spell longer than a token's life) or when FCM refused the token it used.
    """

    def __init__(self, path: str, timeout_s: float, refresh_margin_s: float = 300.0) -> None:
        self.credentials = service_account.Credentials.from_service_account_file(path, scopes=[SCOPE])
        self.refresh_margin_s = refresh_margin_s
        self.current = ""
        self.refreshes = 0
        self._request = partial(google.auth.transport.urllib3.Request(urllib3.PoolManager()), timeout=timeout_s)
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._refreshing: asyncio.Task[TransientFailure | AuthFailure | None] | None = None

    @property
    def project_id(self) -> str:
        return self.credentials.project_id or ""

    async def token(self) -> str | TransientFailure | AuthFailure:
        """A valid access token, or why none could be had."""
        now = time.time()
        if now < self._expires_at:
            if now >= self._refresh_at:
                self._refresh_task()
            return self.current
        return await self.refresh(self.current) or self.current

    async def refresh(self, stale: str) -> TransientFailure | AuthFailure | None:
        """Replace `stale` (unless that has already happened); None once a fresh token is current."""
        if self.current != stale and time.time() < self._expires_at:
            return None
        # shielded: a send that times out must not cancel the refresh others wait for
        return await asyncio.shield(self._refresh_task())

    def _refresh_task(self) -> asyncio.Task[TransientFailure | AuthFailure | None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
        return self._refreshing

    async def _refresh(self) -> TransientFailure | AuthFailure | None:
        try:
            token, expires_at = await asyncio.to_thread(self._mint)
        except RefreshError as exc:  # the token endpoint answered with an error
            why = exc.args[0] if exc.args else repr(exc)
            problem: TransientFailure | AuthFailure = (
                TransientFailure(f"token refresh: {why}") if exc.retryable else AuthFailure(f"token refused: {why}")
            )
        except GoogleAuthError as exc:  # the token endpoint could not be reached
            problem = TransientFailure(f"token endpoint: {exc}")
        except Exception as exc:  # never let a background refresh die silently
            log.exception("FCM token refresh failed")
            problem = TransientFailure(f"token refresh: {exc!r}")
        else:
            now = time.time()
            self.current, self._expires_at = token, expires_at
            self._refresh_at = expires_at - min(self.refresh_margin_s, (expires_at - now) / 4)
            self.refreshes += 1
            return None
        log.warning("FCM access token refresh failed: %s", problem.reason)
        self._refresh_at = min(time.time() + 5.0, self._expires_at)  # not again on every send
        return problem

    def _mint(self) -> tuple[str, float]:
        """In a thread: a new token and when it expires (epoch seconds)."""
        self.credentials.refresh(self._request)
        expiry = self.credentials.expiry
        expires_at = expiry.replace(tzinfo=UTC).timestamp() if expiry else time.time() + 3600.0
        return str(self.credentials.token), expires_at

    def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()


class FcmClient(HttpProvider):
    """POST /v1/projects/{project}/messages:send with a static bearer or service-account tokens."""

    channel = "fcm"

    def __init__(
        self, base_url: str, project: str, bearer: str, timeout_s: float, tokens: ServiceAccountTokens | None = None
    ) -> None:
        super().__init__(base_url, timeout_s)
        self.project = project
        self.account = f"fcm:{project}"
        self.bearer = bearer
        self.tokens = tokens
        self.path = f"/v1/projects/{project}/messages:send"

    @classmethod
    def from_settings(cls, s: Settings) -> FcmClient:
        """A service-account file wins over the static bearer; its project is used unless one is set."""
        if not s.fcm_service_account_file:
            return cls(s.fcm_url, s.fcm_project, s.fcm_bearer, s.provider_timeout_s)
        tokens = ServiceAccountTokens(s.fcm_service_account_file, s.provider_timeout_s)
        project = tokens.project_id if s.fcm_project == Settings.fcm_project and tokens.project_id else s.fcm_project
        return cls(s.fcm_url, project, s.fcm_bearer, s.provider_timeout_s, tokens)

    def body(self, message: OutboundMessage) -> bytes:
        return orjson.dumps(
            {
                "message": {
                    "token": message.address,
                    "notification": {"title": message.content.title or "", "body": message.content.body or ""},
                    "data": {"clarion_nid": message.notification_id, "clarion_did": message.delivery_id},
                }
            }
        )

    async def send(self, message: OutboundMessage) -> SendResult:
        body = self.body(message)
        if self.tokens is None:
            return outcome(await self._post(body, self.bearer))
        bearer = await self.tokens.token()
        if not isinstance(bearer, str):
            return bearer
        result = outcome(await self._post(body, bearer))
        if isinstance(result, AuthFailure) and result.refresh:  # expired or revoked under us: fresh token, once more
            refused = await self.tokens.refresh(bearer)
            if refused is not None:
                return refused
            result = outcome(await self._post(body, self.tokens.current))
        return result

    async def _post(self, body: bytes, bearer: str) -> Answer | TransientFailure:
        headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
        return await self.post(self.path, body, headers)

    async def close(self) -> None:
        if self.tokens is not None:
            self.tokens.close()
        await super().close()
