"""Provider feedback as it arrives over webhooks: signature checks and mapping to Feedback records.

Protocol code only (no aiohttp, no Kafka): web/webhooks.py serves it, agents/feedback.py folds it.
"""
