from __future__ import annotations

import secrets
from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.utils import timezone

from chat.models import PUBLISHABLE_SCOPES, ApiKey, Scope
from knowledge.models import KnowledgeBase

KEY_PREFIXES = {ApiKey.Kind.PUBLISHABLE: "kb_pk_", ApiKey.Kind.SECRET: "kb_sk_"}


def api_key_create(
    *, name: str, kind: str, kb: KnowledgeBase | None, scopes: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the raw key, which exists nowhere else after this call."""
    errors: dict[str, list[str]] = {}
    if kind not in ApiKey.Kind.values:
        errors["kind"] = [f"must be one of {ApiKey.Kind.values}"]
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        errors["scopes"] = [f"unknown scopes {unknown}; known: {sorted(Scope.values)}"]
    if kind == ApiKey.Kind.PUBLISHABLE:
        if kb is None:
            errors["kb"] = ["a publishable key is bound to one knowledge base"]
        if set(scopes) - set(PUBLISHABLE_SCOPES):
            errors.setdefault("scopes", []).append("a publishable key may only ask and give feedback")
        scopes = scopes or PUBLISHABLE_SCOPES
    elif not scopes:
        errors["scopes"] = ["a secret key needs explicit scopes"]
    if errors:
        raise ValidationError(errors)
    raw = KEY_PREFIXES[ApiKey.Kind(kind)] + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name, kind=kind, kb=kb, scopes=sorted(set(scopes)), allowed_origins=list(allowed_origins),
        key_hash=ApiKey.digest(raw), key_prefix=raw[:12],
    )
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key
