from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Knowledge bases"

    def ready(self) -> None:
        import reversion

        from knowledge.models import FaqEntry

        # Derived columns are rebuilt from the text, so revisions keep only what a person wrote.
        reversion.register(FaqEntry, exclude=["search_vector", "content_hash", "version"])
