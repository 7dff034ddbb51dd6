# Production image of kbservice. Target `app` (web + CPU worker) and target `rerank` (GPU worker, vLLM).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 kb
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kbservice kbservice
COPY knowledge knowledge
COPY chat chat
COPY rerank rerank
COPY manage.py gunicorn.conf.py ./
# The project's pinned dependencies, without torch and vLLM: each target brings the build it needs.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if not d.startswith(('torch', 'vllm'))))" > /tmp/requirements.txt

FROM base AS app
# CPU build of torch (used only when KB_EMBED_MODEL names a sentence-transformers model).
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC" \
    && pip install -r /tmp/requirements.txt && pip install --no-deps .
RUN KB_ENV=production KB_SECRET_KEY=build-only KB_ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --no-input -v 0
USER kb
# Celery beat's schedule file (a named volume in compose: it inherits this folder's owner).
RUN mkdir -p /home/kb/beat
EXPOSE 8000
ENV KB_WEB_WORKERS=4
CMD ["gunicorn", "kbservice.wsgi", "--bind", "0.0.0.0:8000"]

FROM base AS rerank
# vLLM with its own CUDA build of torch; runs on a GPU host.
ARG VLLM_SPEC="vllm==0.33.0"
RUN pip install "$VLLM_SPEC" && pip install -r /tmp/requirements.txt && pip install --no-deps .
USER kb
# Threads, not prefork: one process holds the model; its threads feed the micro-batcher.
CMD ["celery", "-A", "kbservice", "worker", "-Q", "rerank", "-P", "threads", "-c", "16", "--prefetch-multiplier", "1", "-l", "INFO"]
