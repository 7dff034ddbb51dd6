"""What the benchmarks send: customer questions about the demo knowledge base, and a driver that
sends work from many threads at once."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# Paraphrases of demo entries (external_id -> how a customer might put it).
PARAPHRASES: dict[str, list[str]] = {
    "demo-zh-001": ["扫码付款的时候显示交易异常，让我稍后再试，咋办"],
    "demo-zh-002": ["付钱的时候一直说支付渠道繁忙"],
    "demo-zh-003": ["一个订单扣了我两次款"],
    "demo-zh-004": ["钱已经付了但订单还是待支付"],
    "demo-zh-005": ["用银行卡付不了，说超出限额了"],
    "demo-zh-006": ["没来得及付款订单就自动取消了"],
    "demo-zh-007": ["买东西能不能分期付？"],
    "demo-zh-008": ["优惠券用不上是怎么回事"],
    "demo-zh-010": ["电子发票在哪里开"],
    "demo-zh-011": ["发票上的税号填错了能重开吗"],
    "demo-zh-014": ["我想退款，怎么操作"],
    "demo-zh-015": ["退款几天能到账"],
    "demo-zh-016": ["七天无理由退货需要满足什么条件"],
    "demo-zh-017": ["退货的快递费谁出"],
    "demo-zh-018": ["衣服买小了可以换大一码吗"],
    "demo-zh-021": ["显示已发货但是物流一直不动"],
    "demo-zh-023": ["下完单还能改收货地址吗"],
    "demo-zh-024": ["物流说签收了但我根本没收到"],
    "demo-zh-028": ["登录不上账号，老是提示失败"],
    "demo-zh-029": ["密码忘了怎么找回"],
    "demo-zh-031": ["手机收不到验证码短信"],
    "demo-zh-032": ["密码输错太多次账号被锁了"],
    "demo-zh-036": ["我想把账号注销掉"],
    "demo-zh-037": ["怎么取消会员的自动续费"],
    "demo-zh-044": ["app一打开就闪退"],
    "demo-zh-055": ["调开放接口老是返回401"],
    "demo-zh-056": ["接口报429，请求太多了"],
    "demo-zh-060": ["人工客服怎么找，几点上班"],
    "demo-zh-062": ["刚买就降价了可以补差价吗"],
    "demo-zh-086": ["蓝牙耳机配对不上手机"],
    "demo-en-001": ['Payment failed with "transaction error, try again later" at checkout'],
    "demo-en-002": ["You charged my card two times for one order"],
    "demo-en-003": ["I already paid but the order says unpaid"],
    "demo-en-004": ["When will I get my refund?"],
    "demo-en-005": ["How can I send something back and who pays the return postage?"],
    "demo-en-006": ["Can I cancel my subscription without paying a penalty?"],
    "demo-en-007": ["I can't remember my password"],
    "demo-en-008": ["The SMS verification code never arrives"],
    "demo-en-009": ["Too many wrong password attempts and now my account is locked"],
    "demo-en-010": ["How to enable 2FA on my account"],
    "demo-en-011": ["Package marked as shipped but tracking is stuck"],
    "demo-en-012": ["Can I update my delivery address after placing the order?"],
    "demo-en-013": ["It says delivered but I didn't receive anything"],
    "demo-en-014": ["I need a VAT invoice with my company name on it"],
    "demo-en-015": ["The app closes immediately when I launch it"],
    "demo-en-016": ["Getting 401 unauthorized from your API"],
    "demo-en-017": ["iPhone not charging when plugged in"],
    "demo-en-018": ["MacBook battery runs out really quickly"],
    "demo-en-019": ["I want to close my account permanently"],
    "demo-en-020": ["My promo code isn't working"],
}
# Greetings and closings: each combination is a distinct question to the answer cache.
VARIANTS = {
    "zh": (["", "你好，", "请问", "客服你好，", "麻烦问一下，", "在吗？"],
           ["", "，谢谢", "，在线等", "，急", "，怎么处理"]),
    "en": (["", "Hi, ", "Hello, ", "Quick question: ", "Hey support, ", "Please help: "],
           ["", ", thanks", " - urgent", ", what should I do?", " (asking again)"]),
}


@dataclass(frozen=True)
class Question:
    text: str
    expected: str  # external_id of the entry that answers it
    language: str


def questions(seed: int) -> list[Question]:
    """Every variant of every paraphrase, distinct after the answer cache's normalisation, shuffled."""
    from chat.answer_cache import normalize_question

    seen: set[str] = set()
    out: list[Question] = []
    for expected, texts in PARAPHRASES.items():
        language = "zh" if "-zh-" in expected else "en"
        prefixes, suffixes = VARIANTS[language]
        for text in texts:
            for prefix in prefixes:
                for suffix in suffixes:
                    body = text if not prefix or language == "zh" else text[0].lower() + text[1:]
                    variant = f"{prefix}{body}{suffix}"
                    key = normalize_question(variant)
                    if key not in seen:
                        seen.add(key)
                        out.append(Question(variant, expected, language))
    random.Random(seed).shuffle(out)
    return out


def run_concurrently(work: Callable[[Item], Outcome], batch: list[Item], concurrency: int, *, max_seconds: float,
                     desc: str) -> tuple[list[Outcome], float]:
    """``work`` on every item of ``batch`` from ``concurrency`` threads; stops submitting after
    ``max_seconds``. Returns the outcomes (in completion order) and the seconds taken."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    pending = iter(batch)
    deadline = time.monotonic() + max_seconds

    def next_item() -> tuple[bool, Any]:
        with lock:
            if time.monotonic() > deadline:
                return False, None
            item = next(pending, _END)
            return item is not _END, item

    def loop(bar: tqdm[Any]) -> None:
        while True:
            more, item = next_item()
            if not more:
                return
            outcome = work(item)
            with lock:
                outcomes.append(outcome)
                bar.update(1)

    started = time.perf_counter()
    with tqdm(total=len(batch), desc=desc, unit="req") as bar, ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop, bar) for _ in range(concurrency)]:
            future.result()
    return outcomes, time.perf_counter() - started



def run_arriving(work: Callable[[Item], Outcome], batch: list[Item], rate: float, *, max_seconds: float, desc: str,
                 seed: int = 3) -> tuple[list[Outcome], float]:
    """``work`` on the items of ``batch`` as customers arrive: Poisson arrivals at ``rate`` per second,
    each started at its time whether or not earlier ones finished (an open loop: a slow server meets
    the same demand, rather than less of it). Returns the outcomes and the seconds taken."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def one(item: Item, bar: tqdm[Any]) -> None:
        outcome = work(item)
        with lock:
            outcomes.append(outcome)
            bar.update(1)

    started = time.perf_counter()
    with tqdm(total=len(batch), desc=desc, unit="req") as bar, ThreadPoolExecutor(256) as pool:
        due = 0.0
        for item in batch:
            due += rng.expovariate(rate)
            if due > max_seconds:
                break
            time.sleep(max(0.0, started + due - time.perf_counter()))
            pool.submit(one, item, bar)
    return outcomes, time.perf_counter() - started


_END = object()
