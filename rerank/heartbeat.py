"""A rerank worker announces itself in Redis while it lives, so readiness can tell whether one is
up and which engine and model it holds, without a broadcast round-trip to every worker."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

import redis
from celery import signals
from django.conf import settings

KEY_PREFIX = "kb:rerank:worker:"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _beat(hostname: str, stop: threading.Event) -> None:
    from rerank.worker import get_batcher

    # Load the engine before the first beat: a worker counts as ready once it holds its model.
    engine = get_batcher().engine
    interval = settings.KB_RERANK_WORKER_HEARTBEAT
    client = _client()
    while not stop.is_set():
        payload = {"engine": engine.name, "model": engine.model, "hostname": hostname, "pid": os.getpid(),
                   "queue": settings.KB_RERANK_QUEUE, "seen_at": time.time()}
        # Redis down: readiness says so; keep beating for when it returns.
        with contextlib.suppress(redis.RedisError):
            client.set(KEY_PREFIX + hostname, json.dumps(payload), ex=interval * 3)
        stop.wait(interval)
    with contextlib.suppress(redis.RedisError):
        client.delete(KEY_PREFIX + hostname)


_stop = threading.Event()


@signals.worker_ready.connect
def _start_heartbeat(sender: Any, **kwargs: Any) -> None:
    queues = set(sender.app.amqp.queues.consume_from or {})
    if settings.KB_RERANK_QUEUE not in queues:
        return
    threading.Thread(target=_beat, args=(sender.hostname, _stop), daemon=True, name="rerank-heartbeat").start()


@signals.worker_shutdown.connect
def _stop_heartbeat(sender: Any, **kwargs: Any) -> None:
    _stop.set()


def rerank_workers_alive() -> list[dict[str, Any]]:
    """Rerank workers that beat recently and consume the queue this process sends reranks to."""
    client = _client()
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=100))
    values = client.mget(keys) if keys else []
    workers = [json.loads(value) for value in values if value]
    return [worker for worker in workers if worker.get("queue") == settings.KB_RERANK_QUEUE]


def rerank_running() -> tuple[str, str] | None:
    """The engine and model the rerank workers hold (the first with a current heartbeat), or None when
    none reports or Redis cannot be read."""
    try:
        workers = rerank_workers_alive()
    except redis.RedisError:
        return None
    return (workers[0]["engine"], workers[0]["model"]) if workers else None
