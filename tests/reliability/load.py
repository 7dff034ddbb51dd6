"""Concurrent customers for fault-injection tests: each client thread holds its own keep-alive HTTP
connection and asks questions from a shared supply until the supply runs out or the load is stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx


@dataclass(frozen=True)
class AskResult:
    question: str
    status: int  # 0 when no HTTP response came back (connection error or client timeout)
    body: dict[str, Any]
    retry_after: str | None
    started: float  # time.monotonic() when the request was sent
    seconds: float

    @property
    def rerank_status(self) -> str | None:
        return self.body.get("rerank", {}).get("status") if self.status == 200 else None


class AskLoad:
    """``with AskLoad(...) as load:`` runs ``clients`` threads posting /api/v1/ask; ``load.join()``
    waits for them and returns every result."""

    def __init__(self, *, base_url: str, key: str, kb: str, questions: Iterable[str], clients: int = 16,
                 request_timeout: float = 60) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {key}"}
        self._request_timeout = request_timeout
        self._kb = kb
        self._questions = iter(questions)
        self._clients = clients
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._results: list[AskResult] = []
        self._pool = ThreadPoolExecutor(max_workers=clients, thread_name_prefix="ask-client")

    def __enter__(self) -> AskLoad:
        self._futures = [self._pool.submit(self._run_client) for _ in range(self._clients)]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._pool.shutdown(wait=True)

    @property
    def completed(self) -> int:
        with self._lock:
            return len(self._results)

    def stop(self) -> None:
        """Let each client finish the ask it is waiting on, then stop."""
        self._stopped.set()

    def results(self) -> list[AskResult]:
        """The asks answered so far, in the order they were sent."""
        with self._lock:
            return sorted(self._results, key=lambda result: result.started)

    def join(self, timeout: float) -> list[AskResult]:
        done, pending = wait(self._futures, timeout=timeout)
        assert not pending, f"{len(pending)} clients still asking after {timeout}s"
        for future in done:
            future.result()  # a client that crashed fails the test here
        return self.results()

    def _next_question(self) -> str | None:
        with self._lock:
            return None if self._stopped.is_set() else next(self._questions, None)

    def _run_client(self) -> None:
        with httpx.Client(base_url=self._base_url, headers=self._headers, timeout=self._request_timeout) as client:
            while (question := self._next_question()) is not None:
                started = time.monotonic()
                try:
                    response = client.post("/api/v1/ask", json={"kb": self._kb, "question": question})
                except httpx.HTTPError as exc:
                    result = AskResult(question=question, status=0, body={"transport_error": repr(exc)},
                                       retry_after=None, started=started, seconds=time.monotonic() - started)
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        body = {"not_json": response.text[:500]}
                    result = AskResult(question=question, status=response.status_code, body=body,
                                       retry_after=response.headers.get("Retry-After"), started=started,
                                       seconds=time.monotonic() - started)
                with self._lock:
                    self._results.append(result)


# Customers' wordings of the tests/chat/conftest.py SHOP_ENTRIES: the same few again and again...
POPULAR_QUESTIONS = ["付款的时候提示交易异常，怎么回事", "收货地址填错了，怎么改", "退款几天能到账",
                     "How can I delete my account?", "I can't remember my password",
                     "The app closes when I take a photo"]
# ...and one-off ones that name an order or an account.
ONE_OFF_QUESTIONS = ["订单{n}付款时提示交易异常怎么办", "订单{n}的收货地址还能改吗", "订单{n}的退款几天到账",
                     "How do I delete account {n}?", "Forgot the password of account {n}",
                     "App build {n} crashes when I open the camera"]


def shop_questions(count: int) -> list[str]:
    """Every other ask repeats a popular question (cache hits, single-flight); the rest are new."""
    return [POPULAR_QUESTIONS[(n // 2) % len(POPULAR_QUESTIONS)] if n % 2
            else ONE_OFF_QUESTIONS[(n // 2) % len(ONE_OFF_QUESTIONS)].format(n=1000 + n)
            for n in range(count)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
