"""A write to FAQ entries described as data, so one description is both checked (applied inside a
transaction that is rolled back) and written for real, and can travel to a Celery task as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from knowledge import services
from knowledge.models import FaqEntry, FaqStatus, KnowledgeBase

OPS = ("create", "update", "set_status", "rollback")


@dataclass(frozen=True)
class FaqChange:
    op: str
    kb_id: int
    entry_ids: tuple[int, ...] = ()
    expected_version: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    status: str = ""
    version_id: int | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown change {self.op!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaqChange:
        return cls(**{**data, "entry_ids": tuple(data.get("entry_ids") or ())})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "entry_ids": list(self.entry_ids)}

    def describe(self) -> str:
        ids = ", ".join(str(pk) for pk in self.entry_ids[:5]) + ("…" if len(self.entry_ids) > 5 else "")
        return {"create": "new entry", "update": f"edit of entry {ids}",
                "set_status": f"{self.status or 'status'} of entry {ids}",
                "rollback": f"rollback of entry {ids}"}[self.op]

    def apply(self, *, actor: services.Actor = None) -> list[int]:
        """Write the change through the entry services; returns the entries written."""
        if self.op == "create":
            kb = KnowledgeBase.objects.get(pk=self.kb_id)
            created = services.faq_entry_create(kb=kb, data=self.data, created_by=actor,
                                                comment=self.comment or "Created")
            return [created.pk]
        if self.op == "update":
            assert self.expected_version is not None
            services.faq_entry_update(entry_id=self.entry_ids[0], expected_version=self.expected_version,
                                      data=self.data, edited_by=actor, comment=self.comment or "Edited")
            return list(self.entry_ids)
        if self.op == "set_status":
            ids = list(FaqEntry.objects.filter(pk__in=self.entry_ids, kb_id=self.kb_id)
                       .exclude(status=self.status).values_list("pk", flat=True))
            services.faq_entries_set_status(entry_ids=ids, status=self.status or FaqStatus.ARCHIVED, edited_by=actor)
            return ids
        assert self.version_id is not None
        services.faq_entry_rollback(entry_id=self.entry_ids[0], version_id=self.version_id, edited_by=actor)
        return list(self.entry_ids)
