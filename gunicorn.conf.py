"""gunicorn settings for every way kbservice's web runs (`make up`, the benchmarks, the image).

gunicorn reads this file from its working directory; the command line adds --bind (and may override
anything here, as the tests' single-worker servers do).
"""

import os

worker_class = "gthread"
workers = int(os.environ.get("KB_WEB_WORKERS", "2"))
# An ask holds its thread while it waits for the rerank worker (up to KB_RERANK_TIMEOUT), and at most
# KB_RERANK_MAX_BACKLOG asks wait at once (the next ones answer degraded at once). With more threads
# than that, a rerank outage cannot take every thread: /healthz (the orchestrator's liveness probe,
# 3 s timeout in docker-compose.yml), widget polls and cached answers still find one.
_rerank_waits_at_most = int(os.environ.get("KB_RERANK_MAX_BACKLOG", "32"))
threads = int(os.environ.get("KB_WEB_THREADS", str(_rerank_waits_at_most + 8)))
timeout = 60
# An idle keep-alive connection stays open longer than a proxy or client keeps one (ALB 60 s,
# nginx upstream pools): with gunicorn's 2 s default, a client reusing a connection the server is
# closing at that moment gets "connection reset", which the load benchmark saw under load.
keepalive = int(os.environ.get("KB_WEB_KEEPALIVE", "75"))
