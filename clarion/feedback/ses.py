"""SES events (as SNS delivers them) mapped to Feedback.

clarion's ids travel as SES message tags, escaped into SES's alphabet (providers/ses.py);
events carry them in `mail.tags` only with event publishing (a configuration set, or the
identity's default one): identity notifications have no tags and are ignored. One event
can name several recipients; clarion sends one per message, so each yields one Feedback.

Bounce Permanent -> bounced (suppressed); Transient or Undetermined -> undelivered (not
suppressed: a full mailbox, a too-large message); Complaint -> complained (suppressed);
Delivery -> delivered. Other event types (Send, Open, Click, DeliveryDelay, …) are ignored.
"""

from __future__ import annotations

import time
from typing import Any

from clarion.feedback import campaign_owner
from clarion.providers.base import OWNER_FIELDS
from clarion.providers.ses import decode_tag
from clarion.schemas.records import Feedback

MAX_RECIPIENTS = 50


class NotOurs(Exception):
    """An event clarion cannot attribute (no or bad clarion tags): acknowledged and dropped."""


def _tag(tags: Any, name: str) -> str:
    values = tags.get(name) if isinstance(tags, dict) else None
    if not isinstance(values, list) or not values or not isinstance(values[0], str):
        raise NotOurs(f"no {name} tag")
    try:
        return decode_tag(values[0][:300])
    except (ValueError, UnicodeDecodeError):
        raise NotOurs(f"the {name} tag is not one clarion made") from None


def _optional_tag(tags: Any, name: str) -> str:
    try:
        return _tag(tags, name)
    except NotOurs:
        return ""


def _recipients(section: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = section.get(key)
    if not isinstance(items, list):
        return []
    return [r for r in items[:MAX_RECIPIENTS] if isinstance(r, dict) and isinstance(r.get("emailAddress"), str)]


def feedback_from(event: Any, now: float | None = None) -> list[Feedback]:
    """The Feedback items of one SES event; [] for event types that are not feedback; NotOurs without ids."""
    if not isinstance(event, dict):
        raise NotOurs("the SNS Message is not an SES event")
    kind = event.get("eventType") or event.get("notificationType")
    mail = event.get("mail") if isinstance(event.get("mail"), dict) else {}
    if kind not in ("Bounce", "Complaint", "Delivery"):
        return []
    nid, did = _tag(mail.get("tags"), "clarion_nid"), _tag(mail.get("tags"), "clarion_did")
    message_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    ts = time.time() if now is None else now
    owner = campaign_owner(*(_optional_tag(mail.get("tags"), f"clarion_{name}") for name in OWNER_FIELDS))

    def item(status: str, address: str, reason: str | None) -> Feedback:
        return Feedback(notification_id=nid, delivery_id=did, channel="email", status=status,  # type: ignore[arg-type]
                        reason=reason[:500] if reason else None, provider_message_id=(message_id or "")[:128] or None,
                        address=address[:320], ts=ts, **owner)  # fmt: skip

    if kind == "Bounce":
        bounce = event.get("bounce") if isinstance(event.get("bounce"), dict) else {}
        kind_of = str(bounce.get("bounceType", "Undetermined"))[:40]
        status = "bounced" if kind_of == "Permanent" else "undelivered"
        out = []
        for r in _recipients(bounce, "bouncedRecipients"):
            detail = r.get("diagnosticCode") or r.get("status") or ""
            out.append(item(status, r["emailAddress"], f"{kind_of}/{bounce.get('bounceSubType', '')}: {detail}"))
        return out
    if kind == "Complaint":
        complaint = event.get("complaint") if isinstance(event.get("complaint"), dict) else {}
        why = str(complaint.get("complaintFeedbackType") or "complaint")
        return [item("complained", r["emailAddress"], why) for r in _recipients(complaint, "complainedRecipients")]
    delivery = event.get("delivery") if isinstance(event.get("delivery"), dict) else {}
    recipients = delivery.get("recipients") if isinstance(delivery.get("recipients"), list) else []
    return [item("delivered", r, None) for r in recipients[:MAX_RECIPIENTS] if isinstance(r, str)]
