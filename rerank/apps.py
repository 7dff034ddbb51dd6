from django.apps import AppConfig


class RerankConfig(AppConfig):
    name = "rerank"
    verbose_name = "Rerank"

    def ready(self) -> None:
        from rerank import heartbeat  # noqa: F401  (connects the worker signals)
