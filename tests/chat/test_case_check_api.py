"""Writes through the API are checked against the regression cases first: 409 with the diff, force, /check."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from reversion.models import Version

from chat.models import ApiKey
from chat.services.keys import api_key_create
from knowledge.models import FaqEntry, FaqStatus, KnowledgeBase, RegressionCase, RevisionCheck
from tests.chat.conftest import make_kb
from tests.chat.test_case_checks import add_cases, entry
from tests.conftest import WorkerProcess
from tests.helpers import calibration_in_force


@pytest.fixture
def writer(live_server: object, shop: KnowledgeBase) -> Iterator[httpx.Client]:
    _, raw = api_key_create(name="cms", kind=ApiKey.Kind.SECRET, kb=None, scopes=["knowledge:write"])
    with httpx.Client(base_url=f"{live_server.url}/api/v1/kbs/shop",  # type: ignore[attr-defined]
                      headers={"Authorization": f"Bearer {raw}"}, timeout=120) as client:
        yield client


@pytest.fixture
def checked(shop: KnowledgeBase, rerank_worker: WorkerProcess) -> KnowledgeBase:
    calibration_in_force(shop, answer=0.3, suggest=0.05)
    add_cases(shop)
    return shop


def _state(item: FaqEntry) -> tuple[object, ...]:
    item.refresh_from_db()
    return item.status, item.version, item.question, Version.objects.get_for_object(item).count()


@pytest.mark.worker
def test_a_breaking_patch_is_refused_with_the_diff_and_written_with_force(
    checked: KnowledgeBase, writer: httpx.Client
) -> None:
    refund = entry(checked, "refund")
    before = _state(refund)
    generation = KnowledgeBase.objects.get(pk=checked.pk).content_generation

    refused = writer.patch(f"/entries/{refund.pk}", json={"version": refund.version, "status": "archived"})

    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "cases_broken" and "break 1 regression case" in error["message"]
    details = error["details"]
    assert (details["cases"], details["broken"], details["fixed"], details["unchanged"]) == (4, 1, 0, 3)
    broken = details["results"][0]
    assert (broken["question"], broken["outcome"], broken["entry"]) == ("退款要几天才能到账", "broken", refund.pk)
    assert broken["before"]["decision"] == "answer" and broken["before"]["top_entry"] == refund.pk
    assert broken["after"]["rank"] is None and broken["before"]["score"] > broken["after"]["score"]
    assert _state(refund) == before
    assert KnowledgeBase.objects.get(pk=checked.pk).content_generation == generation

    reason = "refunds move to the new help centre"
    forced = writer.patch(f"/entries/{refund.pk}",
                          json={"version": refund.version, "status": "archived", "force": True, "reason": reason})

    assert forced.status_code == 200, forced.text
    assert forced.json()["status"] == FaqStatus.ARCHIVED
    revisions = writer.get(f"/entries/{refund.pk}/revisions").json()["results"]
    latest = revisions[0]
    assert latest["check"]["forced"] is True and latest["check"]["broken"] == 1
    assert latest["check"]["reason"] == reason
    assert "published anyway" in latest["comment"]
    assert RevisionCheck.objects.get().check_run_id == latest["check"]["check"]


@pytest.mark.worker
def test_check_endpoint_returns_the_diff_and_writes_nothing(checked: KnowledgeBase, writer: httpx.Client) -> None:
    address = entry(checked, "address")
    before = _state(address)
    body = {"version": address.version, "question": "退款要几天才能到账？", "summary": "退款到账时效",
            "answer": "退款审核通过后原路退回，3到5个工作日到账。"}

    checked_body = writer.post(f"/entries/{address.pk}/check", json=body)

    assert checked_body.status_code == 200, checked_body.text
    result = checked_body.json()
    assert result["cases"] == 4 and {row["outcome"] for row in result["results"]} <= {"broken", "fixed", "unchanged"}
    assert result["broken"] == sum(row["outcome"] == "broken" for row in result["results"])
    assert _state(address) == before


@pytest.mark.worker
def test_a_harmless_write_is_written_and_its_revision_records_the_check(
    checked: KnowledgeBase, writer: httpx.Client
) -> None:
    camera = entry(checked, "camera-crash")
    written = writer.patch(f"/entries/{camera.pk}", json={"version": camera.version, "tags": ["app", "camera"]})
    assert written.status_code == 200, written.text
    latest = writer.get(f"/entries/{camera.pk}/revisions").json()["results"][0]
    assert latest["check"] == {"check": latest["check"]["check"], "broken": 0, "fixed": 0, "forced": False,
                               "reason": ""}


def test_bad_cases_are_refused_in_the_one_error_shape(shop: KnowledgeBase, writer: httpx.Client) -> None:
    other = make_kb("other", [{"external_id": "x", "question": "别的问题", "answer": "别的答案"}])
    elsewhere = FaqEntry.objects.get(kb=other)
    refund = entry(shop, "refund")
    for body, field in (({"question": "退款多久", "expect": "answer", "entry": 999999}, "entry"),
                        ({"question": "退款多久", "expect": "answer", "entry": elsewhere.pk}, "entry"),
                        ({"question": "   ", "expect": "answer", "entry": refund.pk}, "question"),
                        ({"question": "退款多久", "expect": "answer"}, "entry"),
                        ({"question": "退款多久", "expect": "no_answer", "entry": refund.pk}, "entry"),
                        ({"question": "退款多久", "expect": "sometimes", "entry": refund.pk}, "expect")):
        response = writer.post("/cases", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid" and field in error["details"]["fields"], (body, error)
    refused = writer.post("/cases", json={"question": "退款多久", "expect": "answer", "entry": elsewhere.pk})
    assert refused.json()["error"]["details"]["fields"]["entry"] == [f"no entry {elsewhere.pk} in knowledge base shop"]
    # A key bound to another knowledge base cannot add cases to this one: the same 404 as a missing base.
    _, bound = api_key_create(name="other", kind=ApiKey.Kind.SECRET, kb=other, scopes=["knowledge:write"])
    denied = writer.post("/cases", headers={"Authorization": f"Bearer {bound}"},
                         json={"question": "退款多久", "expect": "answer", "entry": refund.pk})
    assert (denied.status_code, denied.json()["error"]["code"]) == (404, "not_found")
    assert not RegressionCase.objects.exists()

    added = writer.post("/cases", json={"question": "退款多久到账？", "expect": "answer", "entry": refund.pk})
    merged = writer.post("/cases", json={"question": "退款多久到账", "expect": "answer", "entry": refund.pk})
    assert (added.status_code, merged.status_code) == (201, 200)
    assert merged.json()["id"] == added.json()["id"] and merged.json()["occurrences"] == 2
    assert writer.delete(f"/cases/{added.json()['id']}").status_code == 204
    assert writer.delete(f"/cases/{added.json()['id']}").json()["error"]["code"] == "not_found"
