from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from kbservice import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("v1/", include("rerank.urls")),
    path("api/v1/", include("rerank.urls")),
    path("api/v1/", include("knowledge.urls")),
    path("api/v1/", include("chat.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

handler404 = "kbservice.api.errors.handler404"
handler500 = "kbservice.api.errors.handler500"
