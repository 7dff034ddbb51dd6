"""Recall of many questions at once (``faq_recall_many``, the case check's and kb_eval's path) gives
each question exactly what asking it alone gives: the same hits, scores, ranks and candidates."""

from knowledge.models import KnowledgeBase
from knowledge.selectors import HeldOutPhrasing, Recall, RecallQuery, faq_queries_embed, faq_recall, faq_recall_many
from knowledge.services import faq_entries_embed, faq_entry_create

from .test_search import ENTRIES

MORE = [
    {"question": "退款多久能到账？", "summary": "退款到账时效", "answer": "原路退回，一般1到3个工作日到账。",
     "similar_questions": ["钱什么时候退回来", "退款一直没到"], "language": "zh"},
    {"question": "How do I reset my password?", "summary": "password reset by email",
     "answer": "Use 'Forgot password' on the sign-in page and follow the emailed link.",
     "similar_questions": ["I forgot my password", "cannot sign in, lost password"], "language": "en"},
]
QUESTIONS = ["付款的时候说交易有问题", "收货地址填错了怎么改", "退款还没到账", "remove my profile permanently",
             "camera crashing on open", "forgot my password", "支付 password 退款"]


def _snapshot(recall: Recall) -> tuple[object, ...]:
    return ([(hit.entry_id, hit.score) for hit in recall.vector_hits],
            [(hit.entry_id, hit.score) for hit in recall.fulltext_hits],
            [(c.entry.pk, c.fused, c.vector_rank, c.fulltext_rank) for c in recall.candidates],
            recall.language, recall.fusion)


def test_a_batch_of_questions_is_recalled_exactly_as_each_alone(kb: KnowledgeBase) -> None:
    """GIVEN Chinese and English entries with similar questions WHEN seven questions (both languages, one
    mixed) are recalled in one batch, some leaving entries out and one with a held-out phrasing THEN every
    question's vector hits, BM25 hits, fused candidates and ranks equal those of asking it alone."""
    entries = [faq_entry_create(kb=kb, data=data) for data in [*ENTRIES, *MORE]]
    faq_entries_embed(entry_ids=[entry.pk for entry in entries])
    refund, password = entries[-2], entries[-1]
    vectors = faq_queries_embed(kb=kb, queries=QUESTIONS)
    asked = [RecallQuery(query=question, vector=vector) for question, vector in zip(QUESTIONS, vectors, strict=True)]
    asked[1] = RecallQuery(query=QUESTIONS[1], vector=vectors[1], exclude_entry_ids=(entries[1].pk,))
    asked[4] = RecallQuery(query=QUESTIONS[4], exclude_entry_ids=(entries[1].pk,))  # embedded by the batch
    asked[5] = RecallQuery(query=QUESTIONS[5], vector=vectors[5],
                           held_out=HeldOutPhrasing(entry_id=password.pk, number=1, text="I forgot my password"))
    batch = faq_recall_many(kb=kb, queries=asked, recall_k=6, limit=5)
    alone = [faq_recall(kb=kb, query=item.query, recall_k=6, limit=5, exclude_entry_ids=item.exclude_entry_ids,
                        held_out=item.held_out) for item in asked]

    assert [_snapshot(recall) for recall in batch] == [_snapshot(recall) for recall in alone]
    assert batch[2].candidates[0].entry.pk == refund.pk  # the batch found real answers, not empty lists
    assert batch[3].candidates[0].entry.pk == entries[2].pk
    assert entries[1].pk not in [c.entry.pk for c in batch[1].candidates]
    assert all(recall.vector_hits for recall in batch)
    assert [bool(recall.fulltext_hits) for recall in batch] == [True, True, True, False, True, True, True]
    assert {recall.language for recall in batch} == {"zh", "en"}


def test_an_empty_batch_asks_nothing(kb: KnowledgeBase) -> None:
    assert faq_recall_many(kb=kb, queries=[]) == []
