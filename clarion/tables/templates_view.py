"""The templates every process holds: the compacted templates topic, tailed into memory."""

from __future__ import annotations

from clarion.schemas.records import TemplateVersion
from clarion.tables.mirror import TopicMirror
from clarion.tables.templates import latest_key


class TemplatesView(TopicMirror[TemplateVersion]):
    """client/template_id@version -> TemplateVersion, and client/template_id@latest -> version.

    It also knows where on the topic each version was written, so a request can carry
    the position of the version the API checked it against, and a worker can wait until
    its own view has read that far before routing it (`caught_up_to`).
    """

    model = TemplateVersion

    def __init__(self, bootstrap: str, topic: str, broker_quirks: str = "") -> None:
        super().__init__(bootstrap, topic, broker_quirks)
        self.offsets: dict[str, int] = {}  # client/template_id@version -> its offset on the topic
        self.counts: dict[str, int] = {}  # client/template_id -> how many versions it has
        self.per_client: dict[str, int] = {}  # client -> how many templates it has

    def add(self, template: TemplateVersion, offset: int | None = None) -> None:
        if template.key not in self:
            name = latest_key(template.client_id, template.template_id)
            self.counts[name] = self.counts.get(name, 0) + 1
            if self.counts[name] == 1:
                self.per_client[template.client_id] = self.per_client.get(template.client_id, 0) + 1
        self[template.key] = template
        if offset is not None:
            self.offsets[template.key] = offset
        latest = latest_key(template.client_id, template.template_id)
        if template.version > self.get(latest, 0):
            self[latest] = template.version

    def versions(self, client_id: str, template_id: str) -> int:
        """How many versions of the template this view holds."""
        return self.counts.get(latest_key(client_id, template_id), 0)

    def templates_of(self, client_id: str) -> int:
        """How many templates the client has."""
        return self.per_client.get(client_id, 0)

    def offset_of(self, key: str) -> int:
        """Where version `key` was written (-1 when not known)."""
        return self.offsets.get(key, -1)
