"""A rerank worker announces itself in Redis while it lives, so readiness can tell whether one is
up, what it is doing (loading its engine, warming up, ready) and which engine and model it holds,
without a broadcast round-trip to every worker.

The beat is short (``KB_RERANK_WORKER_HEARTBEAT``, 2 s) and lapses after three missed beats, so a
killed worker disappears from readiness within seconds; a worker that stops cleanly removes itself."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from celery import signals
from celery.worker import state as worker_state
from django.conf import settings
from django.db import connection

KEY_PREFIX = "kb:rerank:worker:"
logger = logging.getLogger(__name__)

# Apps that know which documents will be reranked register them here (in AppConfig.ready); rerank/
# itself never reads their tables.
WarmupSource = Callable[[], Iterable[str]]
_warmup_sources: list[WarmupSource] = []


def rerank_warmup_source_register(source: WarmupSource) -> None:
    _warmup_sources.append(source)


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


class _Status:
    """What this worker's beats say; written by the start-up thread, read by the beat thread."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.state = "loading"  # loading -> warming -> ready
        self.engine: dict[str, str] = {}
        self.warmed = 0
        self.to_warm = 0

    def payload(self) -> dict[str, Any]:
        return {**self.engine, "state": self.state, "warmed": self.warmed, "to_warm": self.to_warm,
                "hostname": self.hostname, "pid": os.getpid(), "queue": settings.KB_RERANK_QUEUE,
                "seen_at": time.time()}


def _beat(status: _Status, stop: threading.Event) -> None:
    interval = settings.KB_RERANK_WORKER_HEARTBEAT
    client = _client()
    while not stop.is_set():
        # Redis down: readiness says so; keep beating for when it returns.
        with contextlib.suppress(redis.RedisError):
            client.set(KEY_PREFIX + status.hostname, json.dumps(status.payload()), ex=interval * 3)
        stop.wait(interval)
    with contextlib.suppress(redis.RedisError):
        client.delete(KEY_PREFIX + status.hostname)


def _warmup_documents() -> list[str]:
    try:
        return list(dict.fromkeys(document for source in _warmup_sources for document in source()))
    except Exception:  # the database may be down at start: serve unwarmed rather than not at all
        logger.warning("rerank warm-up skipped: could not read the documents to warm up with", exc_info=True)
        return []
    finally:
        connection.close()  # this thread's own connection; the pool's threads have theirs


def _load_and_warm(status: _Status) -> None:
    from rerank.worker import get_batcher

    def progress(done: int, total: int) -> None:
        status.state, status.warmed, status.to_warm = "warming", done, total

    started = time.monotonic()
    try:
        engine = get_batcher().engine
        status.engine = {"engine": engine.name, "model": engine.model}
        engine.warm_up(_warmup_documents(), progress=progress)
    except Exception as exc:
        # An engine that cannot load or score would take tasks it cannot serve: stop the worker, the
        # reason last in its log, and let whoever runs it (make up, Docker) restart it or give up.
        logger.error("the rerank engine failed to start", exc_info=True)
        logger.critical("rerank worker stopping: the %s engine could not load %s: %s: %s",
                        settings.KB_RERANK_BACKEND, settings.KB_RERANK_MODEL, type(exc).__name__, exc)
        worker_state.should_stop = os.EX_SOFTWARE  # type: ignore[assignment]  # an exit code, typed None
        return
    status.state = "ready"
    logger.info("rerank worker ready: %s (%s), warmed up with %d documents in %.1fs", engine.name, engine.model,
                status.to_warm, time.monotonic() - started)


_stop = threading.Event()


@signals.worker_ready.connect
def _start_heartbeat(sender: Any, **kwargs: Any) -> None:
    queues = set(sender.app.amqp.queues.consume_from or {})
    if settings.KB_RERANK_QUEUE not in queues:
        return
    status = _Status(sender.hostname)
    threading.Thread(target=_beat, args=(status, _stop), daemon=True, name="rerank-heartbeat").start()
    threading.Thread(target=_load_and_warm, args=(status,), daemon=True, name="rerank-warmup").start()


@signals.worker_shutdown.connect
def _stop_heartbeat(sender: Any, **kwargs: Any) -> None:
    _stop.set()


def rerank_worker_forget(*, redis_url: str, hostname: str) -> None:
    """Drop a worker's heartbeat now: whoever runs it saw it die, and its callers stop waiting for
    it at once instead of three beats later. Its successor beats again under the same name."""
    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2).delete(KEY_PREFIX + hostname)


def rerank_workers_seen() -> list[dict[str, Any]]:
    """Rerank workers that beat recently and consume the queue this process sends reranks to,
    whatever their state."""
    client = _client()
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=100))
    values = client.mget(keys) if keys else []
    workers = [json.loads(value) for value in values if value]
    return [worker for worker in workers if worker.get("queue") == settings.KB_RERANK_QUEUE]


def rerank_workers_alive() -> list[dict[str, Any]]:
    """Rerank workers that hold their engine, warmed up, and beat recently on this process's queue."""
    return [worker for worker in rerank_workers_seen() if worker.get("state") == "ready"]


def rerank_worker_readiness() -> dict[str, Any]:
    """The readiness check of the rerank workers (registered with kbservice.health)."""
    workers = rerank_workers_seen()
    ready = [worker for worker in workers if worker.get("state") == "ready"]
    if ready:
        return {"workers": [{k: w[k] for k in ("hostname", "engine", "model")} for w in ready]}
    if not workers:
        window = settings.KB_RERANK_WORKER_HEARTBEAT * 3
        raise RuntimeError(f"no rerank worker on queue {settings.KB_RERANK_QUEUE!r} has beaten in the last {window}s")
    raise RuntimeError("; ".join(
        f"{w['hostname']} is loading its engine" if w["state"] == "loading"
        else f"{w['hostname']} is warming up ({w['warmed']}/{w['to_warm']} documents)"
        for w in workers))


def rerank_running() -> tuple[str, str] | None:
    """The engine and model the rerank workers hold (the first with a current heartbeat), or None when
    none reports or Redis cannot be read."""
    try:
        workers = rerank_workers_alive()
    except redis.RedisError:
        return None
    return (workers[0]["engine"], workers[0]["model"]) if workers else None
