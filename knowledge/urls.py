from django.urls import path

from knowledge.apis import cases, entries, kbs

urlpatterns = [
    path("kbs", kbs.KnowledgeBaseListApi.as_view(), name="kb-list"),
    path("kbs/<slug:slug>", kbs.KnowledgeBaseDetailApi.as_view(), name="kb-detail"),
    path("kbs/<slug:slug>/stats", kbs.KnowledgeBaseStatsApi.as_view(), name="kb-stats"),
    path("kbs/<slug:slug>/entries", entries.FaqEntryListApi.as_view(), name="kb-entry-list"),
    path("kbs/<slug:slug>/entries/<int:entry_id>", entries.FaqEntryDetailApi.as_view(), name="kb-entry-detail"),
    path("kbs/<slug:slug>/entries/<int:entry_id>/revisions", entries.FaqEntryRevisionsApi.as_view(),
         name="kb-entry-revisions"),
    path("kbs/<slug:slug>/entries/<int:entry_id>/rollback", entries.FaqEntryRollbackApi.as_view(),
         name="kb-entry-rollback"),
    path("kbs/<slug:slug>/entries/<int:entry_id>/check", entries.FaqEntryCheckApi.as_view(), name="kb-entry-check"),
    path("kbs/<slug:slug>/cases", cases.RegressionCaseListApi.as_view(), name="kb-case-list"),
    path("kbs/<slug:slug>/cases/<int:case_id>", cases.RegressionCaseDetailApi.as_view(), name="kb-case-detail"),
]
