"""Prometheus metrics for operators, shared by every process through Redis.

Gunicorn runs several worker processes and Celery workers are processes of their own, so an
in-process counter would only ever see a slice. ``recording`` adds each event to a few Redis
hashes; ``collector`` turns them into Prometheus families when ``/metrics`` (``views``) is scraped,
together with what Redis knows right now: queue lengths and live rerank workers.
"""
