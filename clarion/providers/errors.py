"""The one error taxonomy: what every provider answer means for the message.

`TABLE` maps (provider, answer) to a class and our reason text. An answer is the
provider's error code or reason (APNs `reason`, FCM `errorCode` or google.rpc status, SES
error type, Twilio error code), else its HTTP status (`"HTTP 401"`), else its status class
(`"HTTP 5xx"`); provider `"*"` holds what every provider shares. `lookup` tries them in that
order, so a provider's own code always wins over its status. The classes:

- permanent: this message (its address, token or content) cannot succeed: fail it; the
  suppression rules (tables/suppression.py) read the reason for dead tokens and opt-outs.
- transient: the provider's own trouble: retry after the backoff (or its Retry-After).
- rate_limited: we (or one device) went too fast: retry after the provider's Retry-After.
- auth: our credentials, never the message's fault. `refresh` says whether fresh credentials
  can help: the client refreshes them and tries once more before answering AuthFailure;
  dispatch then holds the channel and alerts instead of burning messages against a bad key.

The clients only parse their provider's answer into (status, codes) and call `lookup`; none
keeps a table of its own (tests/test_errors.py checks both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from clarion.providers.base import (
    AuthFailure,
    Delivered,
    PermanentFailure,
    SendResult,
    TransientFailure,
    retry_after,
)

Kind = Literal["permanent", "transient", "rate_limited", "auth"]
ANY = "*"  # the provider of the rows every provider shares
PROVIDERS = ("apns", "fcm", "ses", "twilio")


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    why: str  # our reason text: what the answer means and what clarion does about it
    refresh: bool = True  # auth only: fresh credentials may help (False: the account itself is refused)


def _p(why: str) -> Verdict:
    return Verdict("permanent", why)


def _t(why: str) -> Verdict:
    return Verdict("transient", why)


def _r(why: str) -> Verdict:
    return Verdict("rate_limited", why)


def _a(why: str, refresh: bool = True) -> Verdict:
    return Verdict("auth", why, refresh)


TABLE: dict[tuple[str, str], Verdict] = {
    # --- APNs: the `reason` of the error body (the status in the text) -------------------------
    ("apns", "BadDeviceToken"): _p("400: not a device token of this environment"),
    ("apns", "Unregistered"): _p("410: the app is gone from the device; the token is dead (suppressed)"),
    ("apns", "ExpiredToken"): _p("410: the device token expired"),
    ("apns", "DeviceTokenNotForTopic"): _p("400: the token belongs to another app"),
    ("apns", "PayloadTooLarge"): _p("413: the payload is over 4096 bytes"),
    ("apns", "PayloadEmpty"): _p("400: no payload"),
    ("apns", "BadTopic"): _p("400: apns-topic is not valid"),
    ("apns", "TopicDisallowed"): _p("400: pushing to this topic is not allowed"),
    ("apns", "MissingDeviceToken"): _p("400: no device token in the path"),
    ("apns", "TooManyRequests"): _r("429: too many requests to one device token"),
    ("apns", "TooManyProviderTokenUpdates"): _r("429: we re-minted too often; the current token still works"),
    ("apns", "InternalServerError"): _t("500: APNs failed"),
    ("apns", "ServiceUnavailable"): _t("503: APNs is unavailable"),
    ("apns", "Shutdown"): _t("503: the server is going away; reconnect"),
    ("apns", "IdleTimeout"): _t("400: the connection sat idle too long; reconnect"),
    ("apns", "ExpiredProviderToken"): _a("403: the provider token's iat is over an hour old: re-mint"),
    ("apns", "InvalidProviderToken"): _a("403: bad signature, unknown key id or wrong team"),
    ("apns", "MissingProviderToken"): _a("403: no authorization header"),
    # --- FCM HTTP v1: FcmError errorCode, else the google.rpc status ---------------------------
    ("fcm", "UNREGISTERED"): _p("404: the token is dead: app uninstalled, token rotated (suppressed)"),
    ("fcm", "INVALID_ARGUMENT"): _p("400: malformed token or payload"),
    ("fcm", "SENDER_ID_MISMATCH"): _p("403: the token belongs to another Firebase project"),
    ("fcm", "QUOTA_EXCEEDED"): _r("429: the project's (or a device's) send quota"),
    ("fcm", "RESOURCE_EXHAUSTED"): _r("429 without an FCM code: quota"),
    ("fcm", "UNAVAILABLE"): _t("503: FCM is overloaded"),
    ("fcm", "INTERNAL"): _t("500: FCM failed"),
    ("fcm", "UNAUTHENTICATED"): _a("401: the access token expired, was revoked or is not ours"),
    ("fcm", "THIRD_PARTY_AUTH_ERROR"): _a("401: the APNs / web push credential configured in Firebase"),
    ("fcm", "PERMISSION_DENIED"): _a("403: the service account may not send for this project"),
    ("fcm", "HTTP 401"): _a("401 without a code we know: our access token"),
    # --- SES v2: the error type (x-amzn-ErrorType or __type) ----------------------------------
    ("ses", "MessageRejected"): _p("400: SES refused this message (content, unverified address)"),
    ("ses", "BadRequestException"): _p("400: the request is malformed"),
    ("ses", "NotFoundException"): _p("404: a resource the message names does not exist"),
    ("ses", "MailFromDomainNotVerifiedException"): _p("400: the MAIL FROM domain is not verified"),
    ("ses", "MailFromDomainNotVerified"): _p("400: the MAIL FROM domain is not verified"),
    ("ses", "TooManyRequestsException"): _r("429: over the account's send rate"),
    ("ses", "LimitExceededException"): _r("400: over a quota of the account"),
    ("ses", "Throttling"): _r("400: throttled"),
    ("ses", "ThrottlingException"): _r("400: throttled"),
    ("ses", "ExpiredToken"): _a("403: the session token expired: refresh"),
    ("ses", "ExpiredTokenException"): _a("403: the session token expired: refresh"),
    ("ses", "InvalidClientTokenId"): _a("403: the access key is unknown (rotated?)"),
    ("ses", "UnrecognizedClientException"): _a("403: the access key or session token is not valid"),
    ("ses", "SignatureDoesNotMatch"): _a("403: the secret key does not match the access key"),
    ("ses", "InvalidSignatureException"): _a("403: bad signature, or a clock more than 5 minutes off"),
    ("ses", "IncompleteSignatureException"): _a("403: the signature is incomplete"),
    ("ses", "MissingAuthenticationTokenException"): _a("403: no credentials in the request"),
    ("ses", "AccessDeniedException"): _a("403: the credentials may not send (policy)"),
    ("ses", "AccountSuspendedException"): _a("400: the account may not send at all", refresh=False),
    ("ses", "SendingPausedException"): _a("400: sending is paused for the account", refresh=False),
    ("ses", "HTTP 403"): _a("403 without a code we know: our credentials"),
    # --- Twilio: the error `code` of the body. Credentials do not expire: nothing to refresh. ---
    ("twilio", "20003"): _a("401: authentication failed: wrong Account SID or auth token", refresh=False),
    ("twilio", "20005"): _a("401: the account is not active", refresh=False),
    ("twilio", "20404"): _a("404: the account in the path does not exist (or is not ours)", refresh=False),
    ("twilio", "20429"): _r("429: too many requests"),
    ("twilio", "20500"): _t("500: Twilio failed"),
    ("twilio", "20503"): _t("503: Twilio is unavailable"),
    ("twilio", "21211"): _p("400: the To number is not valid"),
    ("twilio", "21212"): _p("400: the From number is not valid"),
    ("twilio", "21408"): _p("400: sending to the To number's region is not enabled"),
    ("twilio", "21602"): _p("400: no Body (nor MediaUrl)"),
    ("twilio", "21603"): _a("400: neither From nor MessagingServiceSid configured", refresh=False),
    ("twilio", "21604"): _p("400: no To"),
    ("twilio", "21606"): _p("400: From is not a message-capable number of ours for this destination"),
    ("twilio", "21609"): _a("400: the StatusCallback URL is not one Twilio accepts", refresh=False),
    ("twilio", "21610"): _p("400: the recipient replied STOP (suppressed: the reason keeps 21610)"),
    ("twilio", "21611"): _r("400: the From number's outgoing queue is full"),
    ("twilio", "21612"): _p("400: To is not reachable from this From"),
    ("twilio", "21614"): _p("400: To is not a mobile number"),
    ("twilio", "21617"): _p("400: the body is over 1600 characters"),
    ("twilio", "21701"): _a("400: the Messaging Service does not exist in this account", refresh=False),
    ("twilio", "21705"): _a("400: the Messaging Service SID is malformed", refresh=False),
    ("twilio", "HTTP 401"): _a("401 without a code we know: our credentials", refresh=False),
    # --- every provider: by HTTP status, when the answer's code is not above -------------------
    (ANY, "HTTP 408"): _t("408: the request timed out at the provider"),
    (ANY, "HTTP 429"): _r("429: too many requests"),
    (ANY, "HTTP 5xx"): _t("5xx: the provider's own trouble"),
    (ANY, "HTTP 4xx"): _p("4xx: the provider refused this request as it is"),
}

UNRECOGNISED = _p("an answer that is neither a known code nor an error status")


def lookup(provider: str, status: int, *codes: str) -> tuple[tuple[str, str], Verdict]:
    """The row of `TABLE` that classifies an error answer, and its verdict.

    `codes`: the provider's error codes in the answer, most specific first (FCM: each
    errorCode, then the rpc status). The first one `TABLE` knows for `provider` decides;
    else the status (the provider's row, then the shared one), else its class (4xx, 5xx).
    """
    for code in codes:
        verdict = TABLE.get((provider, code))
        if verdict is not None:
            return (provider, code), verdict
    for answer in (f"HTTP {status}", f"HTTP {status // 100}xx"):
        for owner in (provider, ANY):
            verdict = TABLE.get((owner, answer))
            if verdict is not None:
                return (owner, answer), verdict
    return (ANY, ""), UNRECOGNISED


Failure = TransientFailure | PermanentFailure | AuthFailure


def failure(verdict: Verdict, reason: str, headers: Mapping[str, str]) -> Failure:
    """The SendResult for a classified answer: transient and rate-limited ones carry the Retry-After."""
    if verdict.kind == "permanent":
        return PermanentFailure(reason)
    if verdict.kind == "auth":
        return AuthFailure(reason, verdict.refresh)
    return TransientFailure(reason, retry_after(headers), rate_limited=verdict.kind == "rate_limited")


RESULT_CLASSES = ("ok", "permanent", "transient", "rate_limited", "auth", "timeout", "connection", "client_error")


def result_class(result: SendResult) -> str:
    """A provider call's result in a few words, for the metrics: one of RESULT_CLASSES."""
    if isinstance(result, Delivered):
        return "ok"
    if isinstance(result, PermanentFailure):
        return "permanent"
    if isinstance(result, AuthFailure):
        return "auth"
    if result.rate_limited:
        return "rate_limited"
    for prefix in ("timeout", "connection", "client_error"):  # the clients' and dispatch's own reasons
        if result.reason.startswith(prefix):
            return prefix
    return "transient"
