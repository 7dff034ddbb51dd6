from django.urls import path

from rerank import apis

urlpatterns = [
    path("rerank", apis.RerankApi.as_view(), name="rerank"),
    path("rerank/batch", apis.RerankBatchApi.as_view(), name="rerank-batch"),
]
