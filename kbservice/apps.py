from django.apps import AppConfig


class KbserviceConfig(AppConfig):
    name = "kbservice"
    verbose_name = "kbservice"
