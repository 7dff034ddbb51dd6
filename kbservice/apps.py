from django.apps import AppConfig


class KbserviceConfig(AppConfig):
    name = "kbservice"
    verbose_name = "kbservice"

    def ready(self) -> None:
        from kbservice.api import schema  # noqa: F401  (registers the OpenAPI extensions)
