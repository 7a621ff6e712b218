"""The one error taxonomy: every provider's documented answers get their class, through each client."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest
from botocore.credentials import Credentials

from clarion.providers import apns, fcm, ses, twilio
from clarion.providers.base import Answer, AuthFailure, OutboundMessage, PermanentFailure, TransientFailure
from clarion.providers.errors import ANY, TABLE, lookup
from clarion.tables.templates import Rendered

# What each provider documents, written out here (not read from the table): (provider, HTTP status,
# error code or reason, class). APNs: "Handling notification responses from APNs"; FCM: the v1
# ErrorCode enum and google.rpc statuses; SES v2: the SendEmail errors and the common AWS errors;
# Twilio: the error dictionary's Messaging codes.
DOCUMENTED = [
    ("apns", 400, "BadDeviceToken", "permanent"),
    ("apns", 410, "Unregistered", "permanent"),
    ("apns", 410, "ExpiredToken", "permanent"),
    ("apns", 400, "DeviceTokenNotForTopic", "permanent"),
    ("apns", 413, "PayloadTooLarge", "permanent"),
    ("apns", 400, "PayloadEmpty", "permanent"),
    ("apns", 400, "BadTopic", "permanent"),
    ("apns", 400, "TopicDisallowed", "permanent"),
    ("apns", 400, "MissingDeviceToken", "permanent"),
    ("apns", 429, "TooManyRequests", "rate_limited"),
    ("apns", 429, "TooManyProviderTokenUpdates", "rate_limited"),
    ("apns", 500, "InternalServerError", "transient"),
    ("apns", 503, "ServiceUnavailable", "transient"),
    ("apns", 503, "Shutdown", "transient"),
    ("apns", 400, "IdleTimeout", "transient"),
    ("apns", 403, "ExpiredProviderToken", "auth"),
    ("apns", 403, "InvalidProviderToken", "auth"),
    ("apns", 403, "MissingProviderToken", "auth"),
    ("fcm", 404, "UNREGISTERED", "permanent"),
    ("fcm", 400, "INVALID_ARGUMENT", "permanent"),
    ("fcm", 403, "SENDER_ID_MISMATCH", "permanent"),
    ("fcm", 429, "QUOTA_EXCEEDED", "rate_limited"),
    ("fcm", 429, "RESOURCE_EXHAUSTED", "rate_limited"),
    ("fcm", 503, "UNAVAILABLE", "transient"),
    ("fcm", 500, "INTERNAL", "transient"),
    ("fcm", 401, "UNAUTHENTICATED", "auth"),
    ("fcm", 401, "THIRD_PARTY_AUTH_ERROR", "auth"),
    ("fcm", 403, "PERMISSION_DENIED", "auth"),
    ("ses", 400, "MessageRejected", "permanent"),
    ("ses", 400, "BadRequestException", "permanent"),
    ("ses", 404, "NotFoundException", "permanent"),
    ("ses", 400, "MailFromDomainNotVerifiedException", "permanent"),
    ("ses", 400, "MailFromDomainNotVerified", "permanent"),
    ("ses", 429, "TooManyRequestsException", "rate_limited"),
    ("ses", 400, "LimitExceededException", "rate_limited"),
    ("ses", 400, "Throttling", "rate_limited"),
    ("ses", 400, "ThrottlingException", "rate_limited"),
    ("ses", 403, "ExpiredToken", "auth"),
    ("ses", 403, "ExpiredTokenException", "auth"),
    ("ses", 403, "InvalidClientTokenId", "auth"),
    ("ses", 403, "UnrecognizedClientException", "auth"),
    ("ses", 403, "SignatureDoesNotMatch", "auth"),
    ("ses", 403, "InvalidSignatureException", "auth"),
    ("ses", 403, "IncompleteSignatureException", "auth"),
    ("ses", 403, "MissingAuthenticationTokenException", "auth"),
    ("ses", 403, "AccessDeniedException", "auth"),
    ("ses", 400, "AccountSuspendedException", "auth"),
    ("ses", 400, "SendingPausedException", "auth"),
    ("twilio", 401, "20003", "auth"),
    ("twilio", 401, "20005", "auth"),
    ("twilio", 404, "20404", "auth"),
    ("twilio", 429, "20429", "rate_limited"),
    ("twilio", 500, "20500", "transient"),
    ("twilio", 503, "20503", "transient"),
    ("twilio", 400, "21211", "permanent"),
    ("twilio", 400, "21212", "permanent"),
    ("twilio", 400, "21408", "permanent"),
    ("twilio", 400, "21602", "permanent"),
    ("twilio", 400, "21603", "auth"),
    ("twilio", 400, "21604", "permanent"),
    ("twilio", 400, "21606", "permanent"),
    ("twilio", 400, "21609", "auth"),
    ("twilio", 400, "21610", "permanent"),
    ("twilio", 400, "21611", "rate_limited"),
    ("twilio", 400, "21612", "permanent"),
    ("twilio", 400, "21614", "permanent"),
    ("twilio", 400, "21617", "permanent"),
    ("twilio", 400, "21701", "auth"),
    ("twilio", 400, "21705", "auth"),
]
# Answers without a code the table knows: the status decides, the provider's own rule first.
BY_STATUS = [
    ("apns", 403, "SomethingNew", "permanent"),  # APNs: every refusal of our token has its reason
    ("apns", 502, "SomethingNew", "transient"),
    ("fcm", 401, "SOMETHING_NEW", "auth"),
    ("fcm", 418, "", "permanent"),
    ("ses", 403, "SomethingNew", "auth"),
    ("ses", 429, "", "rate_limited"),
    ("ses", 408, "", "transient"),
    ("twilio", 401, "", "auth"),
    ("twilio", 400, "99999", "permanent"),
    ("twilio", 504, "", "transient"),
]
RESULT = {"permanent": PermanentFailure, "transient": TransientFailure, "rate_limited": TransientFailure,
          "auth": AuthFailure}  # fmt: skip
WAIT = {"Retry-After": "3"}
FCM_RPC = {"RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAUTHENTICATED"}  # google.rpc statuses FCM answers alone
FCM_RPC_OF = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


class ScriptedSes(ses.SesClient):
    """An SesClient answered by one scripted HTTP answer; counts its calls."""

    def __init__(self, answer: Answer, credentials: ses.CredentialSource | None = None) -> None:
        keys = ses.StaticCredentials(ses.AwsCredentials("AKID", "secret"))
        super().__init__("https://email.eu-west-1.amazonaws.com", "eu-west-1", credentials or keys, "n@example.com", 1)
        self.answer, self.calls = answer, 0

    async def post(self, path: str, body: bytes, headers: Any) -> Answer | TransientFailure:
        self.calls += 1
        return self.answer


def message() -> OutboundMessage:
    return OutboundMessage("n1_a.x.0", "n1_a", "addr", Rendered(subject="s", text="t", title="t", body="b"))


async def through_client(provider: str, status: int, code: str) -> Any:
    """The SendResult the provider's own client makes of this answer, as the provider sends it."""
    if provider == "apns":
        return apns.outcome(status, code, httpx.Headers(WAIT))
    if provider == "fcm":  # an FcmError errorCode in the details beside its rpc status, or the rpc status alone
        error: dict[str, Any] = {"code": status, "message": "m", "status": code if code in FCM_RPC else ""}
        if code not in FCM_RPC:
            error["status"] = FCM_RPC_OF.get(status, "") if (provider, code) in TABLE else ""
            error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
        return fcm.outcome(Answer(status, WAIT, orjson.dumps({"error": error})))
    if provider == "ses":
        headers = {**WAIT, **({"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/"} if code else {})}
        return await ScriptedSes(Answer(status, headers, b'{"message": "m"}')).send(message())
    body = {"code": int(code), "message": "m"} if code else {}
    return twilio.classify_answer(status, body, WAIT)


@pytest.mark.parametrize(("provider", "status", "code", "kind"), DOCUMENTED + BY_STATUS)
async def test_each_documented_answer_gets_its_class_through_its_client(
    provider: str, status: int, code: str, kind: str
) -> None:
    assert lookup(provider, status, code)[1].kind == kind
    result = await through_client(provider, status, code)
    assert type(result) is RESULT[kind], result
    assert result.reason.startswith(f"{status} {code}".strip())  # what suppression and the status show
    if isinstance(result, TransientFailure):
        assert result.retry_after == 3.0  # the provider's delay travels with every retryable class


def test_the_table_holds_exactly_the_documented_answers() -> None:
    codes = {(p, c) for (p, c) in TABLE if p != ANY and not c.startswith("HTTP ")}
    assert codes == {(p, c) for p, _, c, _ in DOCUMENTED}
    assert all(verdict.why for verdict in TABLE.values())  # every row says what it means


def test_status_rows_are_the_providers_own_then_everyones() -> None:
    assert lookup("fcm", 401)[0] == ("fcm", "HTTP 401")
    assert lookup("apns", 401)[0] == (ANY, "HTTP 4xx")  # APNs has no 401 of its own
    assert lookup("ses", 503, "SomethingNew")[0] == (ANY, "HTTP 5xx")
    assert lookup("twilio", 429, "20429")[0] == ("twilio", "20429")  # a code beats the status
    assert lookup("fcm", 404, "UNREGISTERED", "NOT_FOUND")[0] == ("fcm", "UNREGISTERED")  # errorCode, then rpc
    assert lookup("apns", 302)[1].kind == "permanent"  # neither a code nor an error status


async def test_an_account_refused_outright_is_not_refreshed() -> None:
    """SES auth rows say whether fresh credentials can help; a suspended account is not retried."""
    rotating = iter([Credentials("AK1", "S1"), Credentials("AK2", "S2")])
    for code, calls in (("AccountSuspendedException", 1), ("ExpiredTokenException", 2)):
        chain = ses.ChainCredentials(lambda: next(rotating, Credentials("AK3", "S3")))
        client = ScriptedSes(Answer(403 if calls == 2 else 400, {"x-amzn-ErrorType": code}, b"{}"), chain)
        assert isinstance(await client.send(message()), AuthFailure)
        assert client.calls == calls, code


def _literals(module: ModuleType) -> set[str]:
    """Every string and int constant in a module's code (docstrings and comments are not code)."""
    tree = ast.parse(inspect.getsource(module))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return {
        str(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int) and id(node) not in docstrings
    }


@pytest.mark.parametrize(("module", "provider"), [(apns, "apns"), (fcm, "fcm"), (ses, "ses"), (twilio, "twilio")])
def test_the_clients_keep_no_table_of_their_own(module: ModuleType, provider: str) -> None:
    own = {code for p, code in TABLE if p == provider}
    assert _literals(module) & own == set(), f"{module.__name__} names answers only errors.py may classify"
    for name, value in vars(module).items():
        if isinstance(value, dict | set | frozenset) and not name.startswith("__"):
            assert not set(map(str, value)) & own, f"{module.__name__}.{name} is an error table"
