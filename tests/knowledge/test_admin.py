import re

from django.test import Client
from reversion.models import Version

from knowledge.models import FaqEntry, KnowledgeBase
from knowledge.services import faq_entry_create, faq_entry_update


def _form(entry: FaqEntry, **changes: object) -> dict[str, object]:
    data = {"external_id": entry.external_id or "", "question": entry.question, "summary": entry.summary,
            "answer": entry.answer, "tags": ", ".join(entry.tags), "category": entry.category,
            "language": entry.language, "status": entry.status, "version": entry.version}
    data.update(changes)
    return data


def test_admin_edit_creates_a_revision_by_the_user(admin_client: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "运费怎么算？", "answer": "满99包邮。", "tags": ["物流"]})
    response = admin_client.post(f"/admin/knowledge/faqentry/{entry.pk}/change/",
                                 _form(entry, answer="满88包邮。", tags="物流, 运费"))
    assert response.status_code == 302
    entry.refresh_from_db()
    assert (entry.answer, entry.tags, entry.version) == ("满88包邮。", ["物流", "运费"], 2)
    latest = Version.objects.get_for_object(entry).first()
    assert latest is not None and latest.revision.user is not None
    assert latest.revision.user.username == "admin"


def test_admin_refuses_a_stale_form_and_keeps_the_other_edit(admin_client: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Can I pay by invoice?", "answer": "Yes."})
    stale = _form(entry, answer="My edit")
    faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "Their edit"})

    response = admin_client.post(f"/admin/knowledge/faqentry/{entry.pk}/change/", stale)

    assert response.status_code == 200
    assert "Someone else saved this entry" in response.content.decode()
    entry.refresh_from_db()
    assert entry.answer == "Their edit"


def test_admin_history_compares_and_rolls_back(admin_client: Client, kb: KnowledgeBase) -> None:
    entry = faq_entry_create(kb=kb, data={"question": "Refund time?", "answer": "Five days."})
    faq_entry_update(entry_id=entry.pk, expected_version=1, data={"answer": "Ten days."})
    first, second = Version.objects.get_for_object(entry).order_by("pk")

    history = admin_client.get(f"/admin/knowledge/faqentry/{entry.pk}/history/")
    assert history.status_code == 200
    compare = admin_client.get(f"/admin/knowledge/faqentry/{entry.pk}/history/compare/",
                               {"version_id1": first.pk, "version_id2": second.pk})
    assert compare.status_code == 200
    assert "Five days." in compare.content.decode() and "Ten days." in compare.content.decode()

    url = f"/admin/knowledge/faqentry/{entry.pk}/history/{first.pk}/"
    preview = admin_client.get(url)
    assert preview.status_code == 200 and "Roll back to this revision" in preview.content.decode()
    assert admin_client.post(url).status_code == 302

    entry.refresh_from_db()
    assert (entry.answer, entry.version) == ("Five days.", 3)
    assert Version.objects.get_for_object(entry).count() == 3


def test_admin_bulk_archive_and_filters(admin_client: Client, kb: KnowledgeBase) -> None:
    """GIVEN two billing entries archived in bulk, a billing entry left published and an archived shipping
    entry WHEN the list is filtered by tag and status THEN exactly the matching row is listed."""
    entries = [faq_entry_create(kb=kb, data={"question": f"Billing question {n}", "tags": ["billing"]})
               for n in range(2)]
    kept = faq_entry_create(kb=kb, data={"question": "Billing question kept", "tags": ["billing"]})
    shipping = faq_entry_create(kb=kb, data={"question": "Shipping question", "tags": ["shipping"]})
    response = admin_client.post("/admin/knowledge/faqentry/",
                                 {"action": "archive", "_selected_action": [e.pk for e in [*entries, shipping]]})
    assert response.status_code == 302
    assert dict(FaqEntry.objects.values_list("pk", "status")) == {
        entries[0].pk: "archived", entries[1].pk: "archived", kept.pk: "published", shipping.pk: "archived"}

    def listed(**query: str) -> set[str]:
        listing = admin_client.get("/admin/knowledge/faqentry/", query)
        assert listing.status_code == 200
        return set(re.findall(r"(Billing question \w+|Shipping question)", listing.content.decode()))

    assert listed(tag="billing", status__exact="archived") == {"Billing question 0", "Billing question 1"}
    assert listed(tag="billing", status__exact="published") == {"Billing question kept"}
    assert listed(tag="shipping") == {"Shipping question"}


def test_compare_shows_a_sentence_diff_of_the_text_and_no_bookkeeping(admin_client: Client, kb: KnowledgeBase) -> None:
    """GIVEN an answer edited in one sentence WHEN the revisions are compared THEN the view lists the answer
    sentence by sentence with the one removed and the one added, escaped, and no kb/created_by rows."""
    answer = "审核通过后原路退回。银行卡3到5个工作日到账。<b>零钱</b>即时到账。"
    entry = faq_entry_create(kb=kb, data={"question": "退款多久到账？", "summary": "退款时效", "answer": answer})
    faq_entry_update(entry_id=entry.pk, expected_version=1,
                     data={"answer": answer.replace("3到5", "1到3")})
    first, second = Version.objects.get_for_object(entry).order_by("pk")
    html = admin_client.get(f"/admin/knowledge/faqentry/{entry.pk}/history/compare/",
                            {"version_id1": first.pk, "version_id2": second.pk}).content.decode()
    assert '<li class="same">审核通过后原路退回。</li>' in html
    assert '<li class="removed"><del>银行卡3到5个工作日到账。</del></li>' in html
    assert '<li class="added"><ins>银行卡1到3个工作日到账。</ins></li>' in html
    assert "&lt;b&gt;零钱&lt;/b&gt;即时到账。" in html and "<b>零钱</b>" not in html
    headings = {heading.strip().lower() for heading in re.findall(r"<h3>([^<]+)", html)}
    assert "answer" in headings and not {"kb", "knowledge base", "created by", "embedding", "version"} & headings


def test_entry_list_is_branded_has_no_recover_button_and_language_is_a_choice(
    admin_client: Client, kb: KnowledgeBase,
) -> None:
    faq_entry_create(kb=kb, data={"question": "Refund time?", "answer": "Five days.", "language": "en"})
    listing = admin_client.get("/admin/knowledge/faqentry/").content.decode()
    assert "kbservice admin" in listing
    assert "recoverlist" not in listing and "Recover deleted" not in listing
    add = admin_client.get("/admin/knowledge/faqentry/add/").content.decode()
    assert re.search(r'<select name="language"[^>]*>', add)
    assert '<option value="zh">Chinese (zh)</option>' in add and '<option value="en">English (en)</option>' in add
    refused = admin_client.post("/admin/knowledge/faqentry/add/", {"kb": kb.pk, "question": "Q?", "language": "fr",
                                                                   "status": "published", "tags": ""})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert FaqEntry.objects.count() == 1


def test_favicon_is_served(client: Client) -> None:
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200 and response.redirect_chain[0][0].endswith("/static/chat/favicon.svg")
