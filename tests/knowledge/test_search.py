from knowledge.models import KnowledgeBase
from knowledge.selectors import SearchFilters, faq_fulltext_search, faq_vector_search
from knowledge.services import faq_entries_embed, faq_entry_create

ENTRIES = [
    {"question": "扫码支付提示“交易异常，请稍后再试”怎么办？", "summary": "支付网关返回码5003处理",
     "answer": "请在日志中查找网关返回码5003，确认商户号配置。", "tags": ["支付"], "language": "zh"},
    {"question": "如何修改收货地址？", "summary": "订单收货地址变更", "answer": "在订单详情页点击修改地址。",
     "tags": ["物流"], "language": "zh"},
    {"question": "How do I delete my account?", "summary": "account deletion request",
     "answer": "Go to Settings, Privacy, Delete account, and confirm by email.", "tags": ["account"],
     "language": "en"},
    {"question": "The app crashes when I open the camera", "summary": "camera permission crash on Android",
     "answer": "Grant the camera permission in system settings and update the app.", "tags": ["app"],
     "language": "en"},
]


def _load(kb: KnowledgeBase) -> list[int]:
    ids = [faq_entry_create(kb=kb, data=data).pk for data in ENTRIES]
    faq_entries_embed(entry_ids=ids)
    return ids


def test_hnsw_finds_an_entry_from_a_paraphrase(kb: KnowledgeBase) -> None:
    ids = _load(kb)
    assert faq_vector_search(kb=kb, query="付款的时候说交易有问题", k=2)[0].entry_id == ids[0]
    assert faq_vector_search(kb=kb, query="remove my profile permanently", k=2)[0].entry_id == ids[2]


def test_fulltext_finds_chinese_and_english_words(kb: KnowledgeBase) -> None:
    ids = _load(kb)
    assert [hit.entry_id for hit in faq_fulltext_search(kb=kb, query="收货地址填错了", k=5)][:1] == [ids[1]]
    assert [hit.entry_id for hit in faq_fulltext_search(kb=kb, query="camera crashing", k=5)] == [ids[3]]
    assert faq_fulltext_search(kb=kb, query="", k=5) == []


def test_search_respects_filters_and_status(kb: KnowledgeBase) -> None:
    ids = _load(kb)
    english = SearchFilters(language="en")
    assert {hit.entry_id for hit in faq_vector_search(kb=kb, query="支付", k=10, filters=english)} == {ids[2], ids[3]}
    tagged = SearchFilters(tags=("app",))
    assert [hit.entry_id for hit in faq_vector_search(kb=kb, query="account", k=10, filters=tagged)] == [ids[3]]
