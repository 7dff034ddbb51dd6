"""Turns the shared Redis counters into Prometheus metric families at scrape time."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import redis
from django.conf import settings
from kombu.exceptions import OperationalError
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from kbservice.celery import celery_queue_lengths
from kbservice.metrics import recording
from rerank.heartbeat import rerank_workers_alive

logger = logging.getLogger(__name__)

# (Redis hash, metric name, help, label names), all counters.
COUNTERS = (
    (recording.ASKS, "kbservice_asks_total",
     "Questions answered, by knowledge base, decision, answer-cache outcome and rerank status "
     "(ok, degraded = answered in recall order, skipped = nothing recalled).",
     ("kb", "decision", "cache", "rerank")),
    (recording.RERANK_REQUESTS, "kbservice_rerank_requests_total",
     "Rerank round trips to the rerank worker by outcome (ok, timeout, broker_unavailable, error; backlog = "
     "an ask did not queue one behind KB_RERANK_MAX_BACKLOG waiting requests).", ("outcome",)),
    (recording.HTTP_REQUESTS, "kbservice_http_requests_total", "HTTP responses by method and status code.",
     ("method", "status")),
    (recording.API_ERRORS, "kbservice_api_errors_total",
     "Error bodies ({\"error\": {\"code\", ...}}) returned, by status and error code.", ("status", "code")),
    (recording.UNHANDLED_EXCEPTIONS, "kbservice_unhandled_exceptions_total",
     "Exceptions no view handled (each one a 500), by exception type.", ("exception",)),
)


def _histogram(raw: dict[bytes, bytes]) -> HistogramMetricFamily:
    counts = {field.decode(): float(value) for field, value in raw.items()}
    cumulative = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in recording.RERANK_BUCKETS:
        le = floatToGoString(bound)
        cumulative += counts.get(le, 0.0)
        buckets.append((le, cumulative))
    return HistogramMetricFamily(
        "kbservice_rerank_duration_seconds",
        "Time a caller waited for the rerank worker (submit to scores, or to giving up).",
        buckets=buckets, sum_value=counts.get(recording.HISTOGRAM_SUM, 0.0),
    )


class SharedMetricsCollector:
    """Collects on every scrape; with Redis unreachable reports only ``kbservice_redis_up 0``."""

    def collect(self) -> Iterator[Metric]:
        try:
            pipe = recording.metrics_redis().pipeline(transaction=False)
            for key, *_ in COUNTERS:
                pipe.hgetall(key)
            pipe.hgetall(recording.RERANK_SECONDS)
            *counter_hashes, histogram = pipe.execute()
            workers = rerank_workers_alive()
            queues = celery_queue_lengths(
                sorted({settings.KB_RERANK_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE, settings.KB_EMBED_QUEUE}))
        except (redis.RedisError, OperationalError) as exc:
            logger.warning("metrics unavailable, Redis unreachable: %s", exc)
            yield GaugeMetricFamily("kbservice_redis_up", "1 if Redis (cache, broker, metrics) answered.", value=0)
            return
        yield GaugeMetricFamily("kbservice_redis_up", "1 if Redis (cache, broker, metrics) answered.", value=1)
        for (_, name, documentation, labels), raw in zip(COUNTERS, counter_hashes, strict=True):
            family = CounterMetricFamily(name, documentation, labels=labels)
            for field, value in sorted(raw.items()):
                family.add_metric(json.loads(field), float(value))
            yield family
        yield _histogram(histogram)
        yield GaugeMetricFamily("kbservice_rerank_workers",
                                "Rerank workers on KB_RERANK_QUEUE whose heartbeat is current.", value=len(workers))
        depth = GaugeMetricFamily("kbservice_celery_queue_length",
                                  "Tasks waiting in a Celery queue (rerank, default).", labels=("queue",))
        for queue, length in queues.items():
            depth.add_metric([queue], length)
        yield depth
