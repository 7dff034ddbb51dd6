from django.urls import path

from rerank import apis

urlpatterns = [
    path("rerank", apis.RerankApi.as_view(), name="rerank"),
    path("rerank/batch", apis.RerankBatchApi.as_view(), name="rerank-batch"),
]

# Cohere's v2 client posts to /v2/rerank with the same body.
v2_urlpatterns = [path("rerank", apis.RerankAliasApi.as_view(), name="rerank-v2")]

alias_urlpatterns = [
    path("rerank", apis.RerankAliasApi.as_view(), name="rerank-alias"),
    path("rerank/batch", apis.RerankBatchAliasApi.as_view(), name="rerank-batch-alias"),
]
