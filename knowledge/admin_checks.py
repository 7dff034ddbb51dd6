"""The regression check on admin pages that preview a change and then write it (the rollback page),
with the save page's rules: the preview shows the check; broken cases stop the write unless
"publish anyway" is ticked with a reason, which the revision records; past KB_CASES_BACKGROUND_AT
cases the check runs in a Celery task and the page links its progress."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.template.defaultfilters import pluralize
from django.urls import reverse

from knowledge import services
from knowledge.cases.changes import FaqChange
from knowledge.cases.selectors import regression_cases_active
from knowledge.models import CaseCheck, KnowledgeBase

NEEDS_REASON = "Say why this is published although it breaks regression cases."


class RollbackGate:
    """One FaqChange's check on a page: ``preview()`` on GET, ``write()`` on POST, ``context()`` to render."""

    def __init__(self, *, request: HttpRequest, kb: KnowledgeBase, change: FaqChange) -> None:
        self.request, self.kb, self.change = request, kb, change
        self.cases = regression_cases_active(kb=kb).count()
        self.check: CaseCheck | None = None
        self.queued: CaseCheck | None = None
        self.problem = ""
        posted = request.POST if request.method == "POST" else None
        self.anyway = bool(posted and posted.get("publish_anyway"))
        self.reason = (posted.get("override_reason") or "").strip() if posted else ""
        self.wanted = posted.get("case_check_id") if posted else None
        self.forced = False

    def preview(self) -> None:
        # chat composes recall and the reranker; knowledge does not import it at load time.
        from chat.services.checks import CheckUnavailable, case_check_queue, faq_change_check

        if not self.cases:
            return
        if self.cases > settings.KB_CASES_BACKGROUND_AT:
            self.queued = case_check_queue(kb=self.kb, change=self.change, actor=self.request.user)
            return
        try:
            self.check = faq_change_check(kb=self.kb, change=self.change, actor=self.request.user)
        except CheckUnavailable as error:
            self.problem = (f"The regression cases could not be checked ({error}). Tick “Publish anyway” with a "
                            "reason to write it without the check.")

    def write(self) -> bool:
        """Check and write the change; False, with ``problem`` saying why, when nothing was written."""
        from chat.services.checks import CasesBroken, CheckUnavailable, faq_change_write_checked

        if self.anyway and not self.reason:
            self.preview()
            self.problem = NEEDS_REASON
            return False
        done: CaseCheck | None = None
        if self.cases > settings.KB_CASES_BACKGROUND_AT:
            done = self._background_check()
            if done is None:
                return False
        try:
            _, self.check = faq_change_write_checked(kb=self.kb, change=self.change, actor=self.request.user,
                                                     force=self.anyway, reason=self.reason, check=done)
        except CasesBroken as broken:
            self.check = broken.check
            self.problem = (f"This change breaks {broken.check.broken} regression case(s): see the check below. "
                            "Tick “Publish anyway” and give a reason to write it all the same.")
            return False
        except CheckUnavailable as error:
            if not self.anyway:
                self.problem = (f"The regression cases could not be checked ({error}). Tick “Publish anyway” with "
                                "a reason to write it without the check.")
                return False
            with services.faq_revisions_checked(check_id=None, broken=0, fixed=0, forced=True, reason=self.reason):
                self.change.apply(actor=self.request.user)
        self.forced = self.anyway and (self.check is None or self.check.broken > 0)
        return True

    def _background_check(self) -> CaseCheck | None:
        """The finished background check of this very change, or None (a check queued or still running)."""
        check = (CaseCheck.objects.filter(pk=self.wanted, kb=self.kb, change=self.change.as_dict()).first()
                 if self.wanted and str(self.wanted).isdigit() else None)
        if check is not None and check.status == CaseCheck.Status.DONE:
            return check
        if check is None or check.status == CaseCheck.Status.FAILED:
            self.preview()
        else:
            self.queued = check
        self.problem = (f"The regression check of {self.cases} cases runs in the background (below); confirm again "
                        "once it is done.")
        return None

    def verdict(self) -> str:
        if self.check is None:
            return " Written without the regression check (published anyway)." if self.forced else ""
        return (f" Regression check: {self.check.cases} case{pluralize(self.check.cases)}, "
                f"{self.check.fixed} fixed, {self.check.broken} broken"
                f"{' (published anyway)' if self.check.broken else ''}.")

    def context(self) -> dict[str, Any]:
        from chat.services.checks import case_check_summary

        return {
            "case_check": case_check_summary(self.check) if self.check is not None else None,
            "queued_check": self.queued,
            "queued_check_url": (reverse("admin:knowledge_faqentry_case_check", args=[self.queued.pk])
                                 if self.queued is not None else None),
            "check_problem": self.problem, "publish_anyway": self.anyway, "override_reason": self.reason,
            # The override fields: when the check breaks cases, could not run, or the last try lacked a reason.
            "offer_override": bool(self.problem) or bool(self.check and self.check.broken),
        }
