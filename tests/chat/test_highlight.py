from chat.highlight import highlight, render, sentence_spans


def test_sentences_split_on_cjk_and_latin_punctuation_but_not_inside_numbers_or_urls() -> None:
    text = "版本5.0已发布。请访问www.example.com下载! Then restart. Done"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "版本5.0已发布。", "请访问www.example.com下载!", "Then restart.", "Done"]


def test_the_matching_sentence_is_marked_and_everything_is_escaped() -> None:
    text = "Open <b>Settings</b>. Click Delete account to remove your account. Wait 14 days."
    marked = highlight(question="how do I remove my account?", text=text)
    assert [text[s:e] for s, e in marked.spans] == ["Click Delete account to remove your account."]
    assert marked.html == ("Open &lt;b&gt;Settings&lt;/b&gt;. <mark>Click Delete account to remove your account."
                           "</mark> Wait 14 days.")


def test_chinese_question_marks_the_sentence_sharing_its_words() -> None:
    text = "登录后进入设置。退款审核通过后原路退回，银行卡3到5个工作日到账。如有疑问请联系客服。"
    marked = highlight(question="退款几天到账", text=text)
    assert [text[s:e] for s, e in marked.spans] == ["退款审核通过后原路退回，银行卡3到5个工作日到账。"]


def test_adjacent_spans_render_as_one_mark_and_script_stays_inert() -> None:
    assert render("<script>x</script>ab", [(0, 2)]) == "<mark>&lt;s</mark>cript&gt;x&lt;/script&gt;ab"
