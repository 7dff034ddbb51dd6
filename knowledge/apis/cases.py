"""Regression cases of one knowledge base: list, add (merged with a near-identical one), retire."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from knowledge.apis.common import (
    MAX_ID,
    KnowledgeApi,
    Pagination,
    StrictInput,
    StrictIntegerField,
    TextField,
    actor,
    knowledge_base_or_404,
    paginated,
)
from knowledge.cases.selectors import regression_cases_active
from knowledge.cases.services import NOTE_CHARS, regression_case_add, regression_case_clean, regression_case_retire
from knowledge.models import CaseExpect, CaseSource, RegressionCase


class RegressionCaseOutput(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", allow_null=True)

    class Meta:
        model = RegressionCase
        fields = ["id", "question", "expect", "entry", "source", "source_ref", "note", "occurrences", "created_by",
                  "created_at", "updated_at"]
        read_only_fields = fields


class RegressionCaseInput(StrictInput):
    question = TextField(trim_whitespace=False)
    expect = serializers.ChoiceField(choices=CaseExpect.choices)
    entry = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID,
                               help_text="The entry expected (answer, suggest); omit for no_answer.")
    note = TextField(required=False, allow_blank=True, default="", limit=NOTE_CHARS)


class RegressionCaseListApi(KnowledgeApi):
    pagination_class = Pagination

    @extend_schema(operation_id="kbs_cases_list", responses={200: RegressionCaseOutput(many=True)}, tags=["cases"])
    def get(self, request: Request, slug: str) -> Response:
        kb = knowledge_base_or_404(request, slug)
        cases = regression_cases_active(kb=kb).select_related("created_by")
        return paginated(request=request, view=self, queryset=cases, serializer_class=RegressionCaseOutput)

    @extend_schema(operation_id="kbs_cases_create", request=RegressionCaseInput,
                   responses={201: RegressionCaseOutput, 200: RegressionCaseOutput}, tags=["cases"],
                   description="Adds a regression case. The same expectation for a near-identical question "
                               "(width, case, spacing, final punctuation) is merged into the existing case: 200 "
                               "with that case, its `occurrences` counted up.")
    def post(self, request: Request, slug: str) -> Response:
        kb = knowledge_base_or_404(request, slug)
        data = RegressionCaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        case = regression_case_clean(kb=kb, question=fields["question"], expect=fields["expect"],
                                     entry_id=fields.get("entry"), note=fields["note"])
        found, created = regression_case_add(kb=kb, case=case, source=CaseSource.API, created_by=actor(request))
        return Response(RegressionCaseOutput(found).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class RegressionCaseDetailApi(KnowledgeApi):
    @extend_schema(operation_id="kbs_cases_retire", request=None, responses={204: None}, tags=["cases"])
    def delete(self, request: Request, slug: str, case_id: int) -> Response:
        kb = knowledge_base_or_404(request, slug)
        if case_id > MAX_ID or not regression_case_retire(kb=kb, case_id=case_id):
            raise exceptions.NotFound("No such case in this knowledge base.")
        return Response(status=status.HTTP_204_NO_CONTENT)
