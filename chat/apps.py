from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from chat.selectors import faq_rerank_documents_published
        from chat.signals import cors_allow_widget_origins
        from rerank.heartbeat import rerank_warmup_source_register

        check_request_enabled.connect(cors_allow_widget_origins, dispatch_uid="chat-widget-cors")
        rerank_warmup_source_register(faq_rerank_documents_published)
