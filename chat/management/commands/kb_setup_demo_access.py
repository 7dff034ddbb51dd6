"""`manage.py kb_setup_demo_access`: demo users (one per role) and the demo page's widget key. Idempotent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.services import demo_access
from knowledge.models import KnowledgeBase


class Command(BaseCommand):
    help = ("Create the groups agent / knowledge manager / admin, one demo user in each (a random password, "
            "printed once when the user is created) and a publishable widget key for the demo knowledge base, "
            "allowed from the local server's origins (KB_HOST/KB_PORT, or --origin). Running it again changes "
            "nothing and prints no password.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", default="demo", help="knowledge base the widget key is bound to")
        parser.add_argument("--origin", action="append", default=[],
                            help="allowed origin of the widget key (repeatable); default from KB_HOST/KB_PORT")
        parser.add_argument("--key-file", default=None,
                            help=f"where the demo page finds the raw key (default {demo_access.DEMO_KEY_FILE})")
        parser.add_argument("--reset-passwords", action="store_true",
                            help="give the demo users new random passwords and print them; the widget key is "
                                 "left as it is unless --origin is given")

    def handle(self, *args: Any, kb: str, origin: list[str], key_file: str | None, reset_passwords: bool,
               **options: Any) -> None:
        knowledge_base = KnowledgeBase.objects.filter(slug=kb).first()
        if knowledge_base is None:
            raise CommandError(f"No knowledge base {kb!r}: run `manage.py kb_load_demo` first.")
        origins = origin or demo_access.demo_origins(host=os.environ.get("KB_HOST", "127.0.0.1"),
                                                     port=int(os.environ.get("KB_PORT", "8000")))
        users = demo_access.demo_users_ensure(reset_passwords=reset_passwords)
        for user in users:
            if user.password is not None:
                self.stdout.write(f"demo user  {user.username:<13} ({user.role}) password: {user.password}")
            else:
                self.stdout.write(f"demo user  {user.username:<13} ({user.role}) exists; "
                                  "to set a new password run kb_setup_demo_access --reset-passwords")
        if reset_passwords and not origin:
            # Run by hand next to a stack that may serve on another KB_PORT: its key must keep working.
            self.stdout.write("widget key untouched (pass --origin to allow another origin)")
            self.stderr.write("Save the demo users' passwords now: they are not shown again.")
            return
        path = Path(key_file) if key_file else None
        key, _raw, created = demo_access.demo_widget_key_ensure(kb=knowledge_base, origins=origins, key_file=path)
        state = "created" if created else "kept"
        self.stdout.write(f"widget key {key.key_prefix}… {state} for {kb!r}, origins {', '.join(key.allowed_origins)}")
        if any(user.password for user in users):
            self.stderr.write("Save the demo users' passwords now: they are not shown again.")
