from django.apps import AppConfig


class KbserviceConfig(AppConfig):
    name = "kbservice"
    verbose_name = "kbservice"

    def ready(self) -> None:
        from django.core.signals import got_request_exception

        from kbservice.api import schema  # noqa: F401  (registers the OpenAPI extensions)
        from kbservice.metrics.recording import record_unhandled_exception

        got_request_exception.connect(record_unhandled_exception, dispatch_uid="kbservice.metrics.unhandled")
