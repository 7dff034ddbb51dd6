import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from kbservice.embedded import BASE_DIR
from tests.helpers import wait_until

PRODUCTION_ENV = {
    "KB_ENV": "production",
    "KB_SECRET_KEY": "a-long-random-production-secret-key-for-the-deploy-check-0123456789",
    "KB_ALLOWED_HOSTS": "kb.example.com",
}


def test_check_deploy_is_clean_with_production_settings() -> None:
    # As production starts it: none of the test session's own switches (e.g. Playwright's async flag).
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env={**env, **PRODUCTION_ENV}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_behind_a_tls_proxy_sends_hsts_and_sends_plain_http_to_https(tmp_path: Path) -> None:
    """gunicorn with production settings, as behind the TLS-terminating proxy that sets X-Forwarded-Proto;
    probes and the scraper reach it directly (compose: curl http://localhost:8000/healthz)."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "kbservice.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"],
            cwd=BASE_DIR, env={**env, **PRODUCTION_ENV, "KB_STATIC_ROOT": str(tmp_path)},
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: b"Booting worker" in log.read_bytes() or server.poll() is not None, timeout=60)
        listening = re.search(rb"Listening at: (http://127\.0\.0\.1:\d+)", log.read_bytes())
        assert listening, log.read_text()
        base = listening[1].decode()
        page = f"{base}/admin/login/"
        behind_tls = httpx.get(page, headers={"Host": "kb.example.com", "X-Forwarded-Proto": "https"}, timeout=30)
        plain = httpx.get(page, headers={"Host": "kb.example.com"}, timeout=30)
        unknown_host = httpx.get(page, headers={"Host": "localhost:8000", "X-Forwarded-Proto": "https"}, timeout=30)
        probes = {path: httpx.get(f"{base}{path}", headers={"Host": "localhost:8000"}, timeout=30)
                  for path in ("/healthz", "/readyz", "/metrics")}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert behind_tls.status_code == 200, behind_tls.text
    assert behind_tls.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert behind_tls.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in behind_tls.headers["Content-Security-Policy"]
    assert plain.status_code == 301 and plain.headers["Location"] == "https://kb.example.com/admin/login/"
    assert "Strict-Transport-Security" not in plain.headers
    assert unknown_host.status_code == 400
    # Plain HTTP, a host that is not the public one: answered, not redirected, not refused.
    assert probes["/healthz"].status_code == 200 and probes["/healthz"].json() == {"status": "ok"}
    assert probes["/readyz"].status_code in (200, 503) and set(probes["/readyz"].json()["checks"]) == {
        "database", "redis", "broker", "rerank_worker"}
    assert probes["/metrics"].status_code == 200 and "kbservice_redis_up" in probes["/metrics"].text
    assert all(response.headers["X-Frame-Options"] == "DENY" for response in probes.values())


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = {**os.environ, **PRODUCTION_ENV}
    del env["KB_SECRET_KEY"]
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "KB_SECRET_KEY must be set in production" in result.stderr


@pytest.mark.parametrize(("name", "value"), [("KB_RERANK_TIMEOUT", "soon"), ("KB_THROTTLE_RATE", "600 per minute"),
                                           ("KB_WIDGET_THROTTLE_RATE", "0/min"),
                                           ("KB_VLLM_ENGINE_ARGS", "enforce_eager=true"),
                                           ("KB_VLLM_ENGINE_ARGS", "[1]")])
def test_bad_setting_values_are_refused_by_name(name: str, value: str) -> None:
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR,
                            env={**os.environ, name: value}, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"{name}={value!r}" in result.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is installed by make")
def test_docker_compose_file_is_valid_reserves_a_gpu_for_rerank_and_restarts_every_service() -> None:
    env = {**os.environ, "KB_SECRET_KEY": "s", "POSTGRES_PASSWORD": "p", "KB_ALLOWED_HOSTS": "kb.example.com"}
    result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = result.stdout
    services = yaml.safe_load(config)["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "rerank", "beat"}
    assert "capabilities:\n              - gpu" in config or "- gpu" in config
    # Every long-running service is restarted when it exits and says whether it is healthy.
    for name, service in services.items():
        if name != "migrate":
            assert service["restart"] == "unless-stopped" and service["healthcheck"]["test"], name

    missing = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"], cwd=BASE_DIR,
                             env={k: v for k, v in env.items() if k != "KB_SECRET_KEY"},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "KB_SECRET_KEY" in missing.stderr
