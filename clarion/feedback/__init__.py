"""Provider feedback as it arrives over webhooks: signature checks and mapping to Feedback records.

Protocol code only (no aiohttp, no Kafka): web/webhooks.py serves it, agents/feedback.py folds it.
"""

from clarion.schemas.validation import is_id


def campaign_owner(client_id: str, campaign_id: str, user_id: str) -> dict[str, str]:
    """The Feedback fields naming a campaign's execution's user (what its provider metadata carried
    back: OutboundMessage.owner, in OWNER_FIELDS order); none unless all three are well-formed ids."""
    if not (is_id(client_id) and is_id(campaign_id) and is_id(user_id)):
        return {}
    return {"client_id": client_id, "user_id": user_id, "campaign": f"{client_id}/{campaign_id}"}
