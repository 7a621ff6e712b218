"""Amazon SES v2 SendEmail client, signed with AWS Signature Version 4.

Credentials are static (access key, secret, optional session token) or come from
botocore's credential chain (env, shared config/credentials files, container and instance
roles). The chain's network refreshes run in a thread, never on the event loop: within
botocore's advisory window the current credentials keep signing while one refresh runs in
the background; only credentials about to expire make a send wait for it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from clarion.providers.base import (
    Answer,
    AuthFailure,
    Delivered,
    HttpProvider,
    OutboundMessage,
    SendResult,
    TransientFailure,
)
from clarion.providers.errors import failure, lookup

if TYPE_CHECKING:
    from clarion.topology.settings import Settings

log = logging.getLogger("clarion.providers.ses")

PATH = "/v2/email/outbound-emails"

# --- tags ------------------------------------------------------------------------------
# SES tag names and values allow [A-Za-z0-9_-] only, up to 256 characters; clarion's ids
# are [A-Za-z0-9._:@-]. "." (twice in every delivery id) becomes "-", and "_" escapes the
# rest: "-" -> "_h", ":" -> "_c", "@" -> "_a", "_" -> "__". So n3_ab.email.0 travels as
# n3__ab-email-0. Anything else, or a value the escapes would push past 256 characters,
# travels as "_b" + base64url (no "_b" comes out of the escapes).
TAG_MAX = 256
_ESCAPE = str.maketrans({".": "-", "-": "_h", ":": "_c", "@": "_a", "_": "__"})
_UNESCAPE = {"h": "-", "c": ":", "a": "@", "_": "_"}
_ID_CHARS = re.compile(r"[A-Za-z0-9._:@-]*")
TAG_CHARS = re.compile(r"[A-Za-z0-9_-]*")


def encode_tag(value: str) -> str:
    """`value` in SES's tag alphabet, reversibly (decode_tag undoes it); within 256 characters for any id."""
    if _ID_CHARS.fullmatch(value):
        escaped = value.translate(_ESCAPE)
        if len(escaped) <= TAG_MAX:
            return escaped
    return "_b" + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_tag(tag: str) -> str:
    """The value encode_tag made `tag` from; ValueError for a tag it cannot have made."""
    if tag.startswith("_b"):
        data = tag[2:]
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode()  # binascii.Error is a ValueError
    out: list[str] = []
    chars = iter(tag)
    for ch in chars:
        if ch == "_":
            escaped = _UNESCAPE.get(next(chars, ""))
            if escaped is None:
                raise ValueError(f"not an encoded tag: {tag!r}")
            out.append(escaped)
        else:
            out.append("." if ch == "-" else ch)
    return "".join(out)


# --- errors: classified by errors.py, by the code in x-amzn-ErrorType or __type ------------
def error_code(answer: Answer) -> str:
    """The error code of an SES answer: x-amzn-ErrorType ("Code:uri") or the body's __type/code."""
    body = answer.json()
    raw = answer.headers.get("x-amzn-ErrorType") or body.get("__type") or body.get("code") or ""
    code = str(raw).split(":")[0]
    return code.rsplit("#", 1)[-1] or str(body.get("message") or body.get("Message") or "unknown")


# --- credentials -------------------------------------------------------------------------
@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str = ""


class NoCredentials(Exception):
    """No credentials could be found (an empty chain, or a refresh that failed)."""


class CredentialSource(Protocol):
    async def get(self) -> AwsCredentials:
        """Credentials to sign with now; raises NoCredentials."""
        ...

    async def refresh(self, refused: AwsCredentials) -> AwsCredentials:
        """Fresh credentials after SES refused `refused` (the same ones when nothing newer exists)."""
        ...


class StaticCredentials:
    """Configured keys (and session token): nothing to refresh."""

    def __init__(self, credentials: AwsCredentials) -> None:
        self.credentials = credentials

    async def get(self) -> AwsCredentials:
        if not (self.credentials.access_key and self.credentials.secret_key):
            raise NoCredentials("CLARION_SES_ACCESS_KEY / CLARION_SES_SECRET_KEY are not set")
        return self.credentials

    async def refresh(self, refused: AwsCredentials) -> AwsCredentials:
        return self.credentials


def resolve_chain() -> Any:
    """botocore's default credential chain (blocking: files, and for roles the network)."""
    import botocore.session

    return botocore.session.Session().get_credentials()


class ChainCredentials:
    """botocore's credential chain, refreshed in a thread.

    `resolve` returns a botocore Credentials (RefreshableCredentials for roles and SSO) or
    None; it runs in a thread at first use and again when SES refuses what it gave.
    """

    EXPIRING_S = 60.0  # closer than this to expiry, a send waits for the refresh
    RETRY_S = 30.0  # after a background refresh that left them stale, wait before the next one

    def __init__(self, resolve: Callable[[], Any] = resolve_chain) -> None:
        self._resolve = resolve
        self._creds: Any = None
        self._frozen: AwsCredentials | None = None
        self._task: asyncio.Task[AwsCredentials] | None = None
        self._tried_at = float("-inf")

    async def get(self) -> AwsCredentials:
        creds, frozen = self._creds, self._frozen
        if creds is None or frozen is None:
            return await asyncio.shield(self._run(self._load))
        if not _refresh_needed(creds):
            return frozen
        # botocore's advisory window (15 min before expiry for roles): get_frozen_credentials
        # would refresh on this thread, so it runs in another one, one refresh at a time
        if self._task is None and time.monotonic() - self._tried_at >= self.RETRY_S:
            self._tried_at = time.monotonic()
            self._run(lambda: _frozen(creds.get_frozen_credentials()))
        if self._task is not None and _refresh_needed(creds, self.EXPIRING_S):
            return await asyncio.shield(self._task)
        return frozen

    async def refresh(self, refused: AwsCredentials) -> AwsCredentials:
        if self._frozen is not None and self._frozen != refused:
            return self._frozen  # another send already refreshed them
        return await asyncio.shield(self._task or self._run(self._load))

    def _load(self) -> AwsCredentials:
        creds = self._resolve()
        if creds is None:
            raise NoCredentials("botocore's credential chain found no credentials")
        self._creds = creds
        return _frozen(creds.get_frozen_credentials())

    def _run(self, work: Callable[[], AwsCredentials]) -> asyncio.Task[AwsCredentials]:
        """`work` in a thread, shared by every send that asks meanwhile; its result becomes current."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._in_thread(work))
            self._task.add_done_callback(_retrieve)
        return self._task

    async def _in_thread(self, work: Callable[[], AwsCredentials]) -> AwsCredentials:
        try:
            frozen = await asyncio.to_thread(work)
        except NoCredentials:
            raise
        except Exception as exc:  # botocore raises many kinds (network, parsing, RuntimeError)
            log.warning("refreshing AWS credentials failed: %r", exc)
            raise NoCredentials(f"credential refresh failed: {exc!r}") from exc
        finally:
            self._task = None
        self._frozen = frozen
        return frozen


def _refresh_needed(creds: Any, within_s: float | None = None) -> bool:
    refresh_needed = getattr(creds, "refresh_needed", None)  # static botocore Credentials have none
    return bool(refresh_needed and refresh_needed(within_s))


def _frozen(ro: Any) -> AwsCredentials:
    return AwsCredentials(ro.access_key, ro.secret_key, ro.token or "")


def _retrieve(task: asyncio.Task[AwsCredentials]) -> None:
    if not task.cancelled():
        task.exception()  # a background refresh's failure is logged; the current credentials keep signing


def credential_source(kind: str, access_key: str, secret_key: str, session_token: str = "") -> CredentialSource:
    """The source CLARION_SES_CREDENTIALS names: "static" (the configured keys) or "chain" (botocore's)."""
    if kind == "static":
        return StaticCredentials(AwsCredentials(access_key, secret_key, session_token))
    if kind == "chain":
        return ChainCredentials()
    raise ValueError(f"CLARION_SES_CREDENTIALS must be 'static' or 'chain', not {kind!r}")


# --- the client --------------------------------------------------------------------------
class SesClient(HttpProvider):
    channel = "email"

    def __init__(
        self, base_url: str, region: str, credentials: CredentialSource, sender: str, timeout_s: float,
        configuration_set: str = "",
    ) -> None:  # fmt: skip
        super().__init__(base_url, timeout_s)
        self.region = region
        self.account = f"ses:{region}"  # one AWS account per deployment (one credentials source): its region's quota
        self.credentials = credentials
        self.sender = sender
        self.configuration_set = configuration_set  # its event destination (SNS) carries the tags back as feedback

    @classmethod
    def from_settings(cls, s: Settings) -> SesClient:
        credentials = credential_source(s.ses_credentials, s.ses_access_key, s.ses_secret_key, s.ses_session_token)
        return cls(s.ses_url, s.ses_region, credentials, s.ses_from, s.provider_timeout_s, s.ses_configuration_set)

    def payload(self, message: OutboundMessage) -> bytes:
        content = message.content
        body_parts = {}
        if content.text is not None:
            body_parts["Text"] = {"Data": content.text, "Charset": "UTF-8"}
        if content.html is not None:
            body_parts["Html"] = {"Data": content.html, "Charset": "UTF-8"}
        extra = {"ConfigurationSetName": self.configuration_set} if self.configuration_set else {}
        return orjson.dumps(
            {
                **extra,
                "FromEmailAddress": self.sender,
                "Destination": {"ToAddresses": [message.address]},
                "Content": {
                    "Simple": {"Subject": {"Data": content.subject or "", "Charset": "UTF-8"}, "Body": body_parts}
                },
                "EmailTags": [
                    {"Name": "clarion_nid", "Value": encode_tag(message.notification_id)},
                    {"Name": "clarion_did", "Value": encode_tag(message.delivery_id)},
                    *({"Name": f"clarion_{name}", "Value": encode_tag(value)}
                      for name, value in message.owner().items()),  # a campaign's execution names its user
                ],
            }
        )

    async def send(self, message: OutboundMessage) -> SendResult:
        payload = self.payload(message)
        try:
            creds = await self.credentials.get()
            result = await self._call(payload, creds)
            if isinstance(result, AuthFailure) and result.refresh:  # stale credentials? fresh ones, once more
                fresh = await self.credentials.refresh(creds)
                if fresh != creds:
                    result = await self._call(payload, fresh)
        except NoCredentials as exc:
            return AuthFailure(f"no AWS credentials: {exc}")
        return result

    async def _call(self, payload: bytes, creds: AwsCredentials) -> SendResult:
        headers = sigv4_headers(
            self.base_url + PATH, payload, self.region, "ses", creds.access_key, creds.secret_key,
            datetime.now(UTC), creds.session_token,
        )  # fmt: skip
        answer = await self.post(PATH, payload, headers)
        if isinstance(answer, TransientFailure):
            return answer
        if answer.status == 200:
            return Delivered(str(answer.json().get("MessageId", "")))
        code = error_code(answer)
        _, verdict = lookup("ses", answer.status, code)
        return failure(verdict, f"{answer.status} {code}", answer.headers)


def sigv4_headers(
    url: str, payload: bytes, region: str, service: str, access_key: str, secret_key: str, now: datetime,
    session_token: str = "",
) -> dict[str, str]:  # fmt: skip
    """Headers for an AWS SigV4-signed JSON POST (no query string), as botocore's SigV4Auth signs it."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {"content-type": "application/json", "host": parts.netloc, "x-amz-date": amz_date}
    if session_token:
        headers["x-amz-security-token"] = session_token
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            "POST",
            parts.path or "/",
            "",
            *(f"{k}:{headers[k]}" for k in sorted(headers)),
            "",
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers
