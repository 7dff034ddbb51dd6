from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.models import ApiKey
from chat.services.keys import api_key_create, api_key_revoke
from knowledge.models import KnowledgeBase


class Command(BaseCommand):
    help = "Create, list and revoke API keys. A new key is printed once; only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("--kb", help="knowledge base slug (required for publishable keys)")
        create.add_argument("--kind", choices=ApiKey.Kind.values, required=True)
        create.add_argument("--scopes", default="", help="comma-separated, e.g. ask,rerank")
        create.add_argument("--origins", default="", help="publishable keys: allowed origins, comma-separated")
        create.add_argument("--name", default="", help="a label for the key")
        listing = sub.add_parser("list", help="list keys (never the keys themselves)")
        listing.add_argument("--kb", help="only keys of this knowledge base")
        revoke = sub.add_parser("revoke", help="revoke a key by its prefix or id")
        revoke.add_argument("key", help="key id or the prefix shown by `list`")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _kb(self, slug: str | None) -> KnowledgeBase | None:
        if not slug:
            return None
        kb = KnowledgeBase.objects.filter(slug=slug).first()
        if kb is None:
            raise CommandError(f"No knowledge base with slug {slug!r}.")
        return kb

    def _create(self, options: dict[str, Any]) -> None:
        split = lambda value: [item.strip() for item in value.split(",") if item.strip()]  # noqa: E731
        try:
            key, raw = api_key_create(
                name=options["name"] or f"{options['kind']} key", kind=options["kind"], kb=self._kb(options["kb"]),
                scopes=split(options["scopes"]), allowed_origins=split(options["origins"]),
            )
        except ValidationError as error:
            problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
            raise CommandError(problems) from error
        self.stdout.write(raw)
        self.stderr.write(f"Created {key.kind} key {key.pk} ({key.key_prefix}…) with scopes {','.join(key.scopes)}. "
                          "Store it now: it is not shown again.")

    def _list(self, options: dict[str, Any]) -> None:
        keys = ApiKey.objects.select_related("kb").order_by("pk")
        kb = self._kb(options.get("kb"))
        if kb is not None:
            keys = keys.filter(kb=kb)
        for key in keys:
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
            self.stdout.write(f"{key.pk}\t{key.key_prefix}…\t{key.kind}\t{key.kb or '*'}\t{','.join(key.scopes)}\t"
                              f"{state}\tlast used {used}\t{key.name}")

    def _revoke(self, options: dict[str, Any]) -> None:
        ident = options["key"]
        matches = ApiKey.objects.filter(pk=int(ident)) if ident.isdigit() else ApiKey.objects.filter(
            key_prefix__startswith=ident.rstrip("…"))
        if matches.count() != 1:
            raise CommandError(f"{ident!r} matches {matches.count()} keys; give the id from `kb_key list`.")
        key = api_key_revoke(key=matches.get())
        self.stdout.write(f"Revoked key {key.pk} ({key.key_prefix}…).")
