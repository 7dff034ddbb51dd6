from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import httpx
import pytest

from chat.models import ApiKey
from chat.services.keys import api_key_create
from knowledge.models import KnowledgeBase
from knowledge.services import faq_entries_embed, faq_entry_create, knowledge_base_create

SHOP_ENTRIES = [
    {"external_id": "pay-5003", "question": "扫码支付提示“交易异常，请稍后再试”怎么办？",
     "summary": "支付网关返回码5003：商户号配置或渠道限流",
     "answer": "这是支付网关返回码5003。请先确认商户号配置正确。如果持续出现，请在日志中查找交易流水号并联系技术支持。",
     "tags": ["支付"], "language": "zh"},
    {"external_id": "address", "question": "如何修改收货地址？", "summary": "订单收货地址变更",
     "answer": "订单发货前，在订单详情页点击“修改地址”。发货后请联系快递公司。", "tags": ["物流"], "language": "zh"},
    {"external_id": "refund", "question": "退款多久到账？", "summary": "退款到账时效",
     "answer": "退款审核通过后，原路退回。银行卡一般3到5个工作日到账。", "tags": ["售后"], "language": "zh"},
    {"external_id": "delete-account", "question": "How do I delete my account?",
     "summary": "account deletion request, GDPR erasure",
     "answer": "Open Settings and choose Privacy. Click Delete account and confirm the email we send you. "
               "Deletion is final after 14 days.", "tags": ["account"], "language": "en"},
    {"external_id": "reset-password", "question": "I forgot my password", "summary": "password reset flow",
     "answer": "Click Forgot password on the sign-in page. We email you a reset link that is valid for one hour.",
     "tags": ["account"], "language": "en"},
    {"external_id": "camera-crash", "question": "The app crashes when I open the camera",
     "summary": "Android camera permission crash",
     "answer": "Grant the camera permission in your phone settings. Then update the app to the latest version.",
     "tags": ["app"], "language": "en"},
]


def make_kb(slug: str, entries: Sequence[Mapping[str, object]] = SHOP_ENTRIES) -> KnowledgeBase:
    kb = knowledge_base_create(slug=slug, name=slug.title())
    ids = [faq_entry_create(kb=kb, data=dict(entry)).pk for entry in entries]
    faq_entries_embed(entry_ids=ids)
    return kb


@pytest.fixture
def shop(transactional_db: None) -> KnowledgeBase:
    return make_kb("shop")


@pytest.fixture
def secret_key(shop: KnowledgeBase) -> str:
    _, raw = api_key_create(name="server", kind=ApiKey.Kind.SECRET, kb=shop,
                            scopes=["ask", "tickets", "feedback", "rerank"])
    return raw


@pytest.fixture
def api(live_server: object, secret_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=str(live_server.url), headers={"Authorization": f"Bearer {secret_key}"},  # type: ignore[attr-defined]
                      timeout=60) as client:
        yield client
