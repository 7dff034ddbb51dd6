from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from chat.views import widget as chat_widget
from rerank import urls as rerank_urls

admin.site.site_header = "kbservice admin"
admin.site.site_title = "kbservice admin"
admin.site.index_title = "Knowledge back office"
admin.site.enable_nav_sidebar = False  # the entry list needs the width at 1280 px; the header links suffice

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="demo", permanent=False)),
    # Browsers ask every site for /favicon.ico; without it each page logs a 404.
    path("favicon.ico", RedirectView.as_view(url=static("chat/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("console/", include("chat.views.urls")),
    path("demo/", chat_widget.demo, name="demo"),
    path("widget.js", chat_widget.widget_js, name="widget-js"),
    path("v1/", include("rerank.urls")),
    path("v2/", include(rerank_urls.v2_urlpatterns)),
    path("api/v1/", include(rerank_urls.alias_urlpatterns)),
    path("api/v1/", include("knowledge.urls")),
    path("api/v1/", include("chat.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: no inline script, so the CSP stays strict.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

handler400 = "kbservice.api.errors.handler400"
handler403 = "kbservice.api.errors.handler403"
handler404 = "kbservice.api.errors.handler404"
handler500 = "kbservice.api.errors.handler500"
