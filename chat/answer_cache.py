"""Answer cache in Redis with single-flight.

Key = knowledge base, its content generation, the normalised question, instruction, filters and
models: an edit bumps the generation, so no answer computed before the edit is ever served after it.

Single-flight: the first miss takes a short lock and computes; identical misses arriving meanwhile
wait for its result instead of running recall + rerank again. If the computing process dies, its
lock expires and a waiter computes. If Redis is down, everyone computes (uncached): answering
matters more than caching.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

CacheStatus = Literal["hit", "miss", "shared"]
# How long a non-cacheable result stays readable for the callers that were waiting on it.
HANDOFF_TTL = 5
_TRAILING_PUNCTUATION = re.compile(r"[\s?？!！.。,，;；:：~～…]+$")
_WHITESPACE = re.compile(r"\s+")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def normalize_question(text: str) -> str:
    """NFKC (full-width → half-width), case-folded, whitespace collapsed, trailing punctuation dropped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _WHITESPACE.sub(" ", text).strip()
    return _TRAILING_PUNCTUATION.sub("", text)


def cache_key(**parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"kb:answer:{digest}"


@dataclass(frozen=True)
class Cached:
    value: dict[str, Any]
    status: CacheStatus


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    return _client


def get_or_compute(
    key: str, compute: Callable[[], tuple[dict[str, Any], bool]], *, ttl: int, wait: float,
) -> Cached:
    """Return the cached value, or compute it once for all concurrent callers.

    ``compute`` returns ``(value, cacheable)``; a value that should not be reused (e.g. a
    degraded answer) is still shared with callers waiting on this computation."""
    client = _redis()
    try:
        raw = client.get(key)
        if raw is not None:
            return Cached(json.loads(raw), "hit")
        token = uuid.uuid4().hex
        lock_key = f"{key}:lock"
        # The lock outlives a normal computation but not a crashed one.
        if client.set(lock_key, token, nx=True, px=int((wait + 5) * 1000)):
            return _compute_and_publish(client, key, lock_key, token, compute, ttl)
        return _wait_for(client, key, lock_key, compute, ttl=ttl, wait=wait)
    except redis.RedisError as exc:
        logger.warning("answer cache unavailable, answering uncached: %s", exc)
        value, _ = compute()
        return Cached(value, "miss")


def _compute_and_publish(client: redis.Redis, key: str, lock_key: str, token: str,
                         compute: Callable[[], tuple[dict[str, Any], bool]], ttl: int) -> Cached:
    try:
        value, cacheable = compute()
        # Only cacheable values go under the key; the rest is handed to waiters and then dropped.
        _store(client, key if cacheable else f"{key}:handoff", value, ttl=ttl if cacheable else HANDOFF_TTL)
        return Cached(value, "miss")
    finally:
        with contextlib.suppress(redis.RedisError):
            client.eval(_RELEASE, 1, lock_key, token)


def _wait_for(client: redis.Redis, key: str, lock_key: str,
              compute: Callable[[], tuple[dict[str, Any], bool]], *, ttl: int, wait: float) -> Cached:
    deadline = time.monotonic() + wait + 5
    delay = 0.01
    while time.monotonic() < deadline:
        raw = client.get(key) or client.get(f"{key}:handoff")
        if raw is not None:
            return Cached(json.loads(raw), "shared")
        if not client.exists(lock_key):
            # Published between our read and the lock check, or the computing process died.
            raw = client.get(key) or client.get(f"{key}:handoff")
            if raw is not None:
                return Cached(json.loads(raw), "shared")
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    value, cacheable = compute()
    if cacheable:
        _store(client, key, value, ttl=ttl)
    return Cached(value, "miss")


def _store(client: redis.Redis, key: str, value: dict[str, Any], *, ttl: int) -> None:
    with contextlib.suppress(redis.RedisError):
        client.set(key, json.dumps(value, ensure_ascii=False), ex=ttl)
