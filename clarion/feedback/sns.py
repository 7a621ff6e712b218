"""Amazon SNS HTTP(S) messages: the signature checked as AWS documents it.

SNS signs a canonical string of the message's fields (name, newline, value, newline, in
a fixed order per message type) with the key of the certificate at SigningCertURL:
SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA. The certificate is fetched only
from a URL whose scheme://host[:port] fully matches the configured pattern (real SNS:
https://sns.<region>.amazonaws.com), and cached, so a forged message can neither make
clarion fetch from a host of its choosing nor bring its own key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
TYPES = {
    "Notification": NOTIFICATION_FIELDS,
    "SubscriptionConfirmation": CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": CONFIRMATION_FIELDS,
}
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT_BYTES = 16 * 1024


class Rejected(Exception):
    """A message that is not a validly signed SNS message (the webhook answers 403)."""


def canonical(message: dict[str, Any]) -> bytes:
    """The string SNS signs for `message` (Subject only when present, as SNS does)."""
    kind = message.get("Type")
    fields = TYPES.get(kind) if isinstance(kind, str) else None
    if fields is None:
        kind = message.get("Type")
        raise Rejected(f"unknown SNS message Type {kind[:40] if isinstance(kind, str) else type(kind).__name__!r}")
    out = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise Rejected(f"SNS message field {name} is missing or not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def allowed_url(url: str, host_pattern: str) -> bool:
    """Whether `url`'s scheme://host[:port] fully matches `host_pattern` (no user info, no tricks)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    if "@" in parts.netloc or not parts.hostname:
        return False
    return re.fullmatch(host_pattern, f"{parts.scheme}://{parts.netloc}") is not None


Fetch = Callable[[str], Awaitable[bytes]]


class CertificateCache:
    """Signing keys by certificate URL: each fetched once (from allowed URLs only), the newest kept."""

    def __init__(self, host_pattern: str, fetch: Fetch, size: int = 32) -> None:
        self.host_pattern = host_pattern
        self.fetch = fetch
        self.size = size
        self.keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()

    async def key_for(self, url: str) -> rsa.RSAPublicKey:
        if not allowed_url(url, self.host_pattern) or not url.endswith(".pem"):
            raise Rejected("SigningCertURL is not an SNS certificate URL")
        key = self.keys.get(url)
        if key is not None:
            self.keys.move_to_end(url)
            return key
        pem = await self.fetch(url)
        try:
            public = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as exc:
            raise Rejected(f"the certificate at SigningCertURL does not load: {exc}") from None
        if not isinstance(public, rsa.RSAPublicKey):
            raise Rejected("the certificate at SigningCertURL has no RSA key")
        self.keys[url] = public
        while len(self.keys) > self.size:
            self.keys.popitem(last=False)
        return public


async def verify(message: dict[str, Any], certs: CertificateCache) -> None:
    """Return if `message` carries a valid SNS signature; raise Rejected otherwise."""
    version = message.get("SignatureVersion")
    # a string or a number only: str() of a deeply nested list raises RecursionError (found by the fuzz test)
    algorithm = HASHES.get(str(version)) if type(version) in (str, int) else None
    if algorithm is None:
        raise Rejected("SignatureVersion must be 1 or 2")
    data = canonical(message)
    raw = message.get("Signature")
    try:
        sig = base64.b64decode(raw if isinstance(raw, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("Signature is not base64") from None
    url = message.get("SigningCertURL")
    key = await certs.key_for(url if isinstance(url, str) else "")
    try:
        key.verify(sig, data, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Rejected("the SNS signature does not match") from None
