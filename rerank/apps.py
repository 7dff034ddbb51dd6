from django.apps import AppConfig


class RerankConfig(AppConfig):
    name = "rerank"
    verbose_name = "Rerank"

    def ready(self) -> None:
        from kbservice.health import readiness_check_register
        from rerank.heartbeat import rerank_worker_readiness  # also connects the worker signals

        readiness_check_register("rerank_worker", rerank_worker_readiness)
