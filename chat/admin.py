"""Back office for helpdesk hand-off: a knowledge base's webhook, and every delivery with its attempts."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from chat.models import HelpdeskWebhook, WebhookAttempt, WebhookDelivery


@admin.register(HelpdeskWebhook)
class HelpdeskWebhookAdmin(admin.ModelAdmin):
    list_display = ("kb", "url", "active", "created_at")
    list_select_related = ("kb",)
    fields = ("kb", "url", "secret", "active")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("at", "status_code", "error", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Read-only: what was sent, how often it was tried and what the helpdesk answered."""

    list_display = ("pk", "created_at", "webhook", "event", "ticket", "status", "attempts", "delivered_at")
    list_filter = ("status", "event", "webhook")
    list_select_related = ("webhook__kb", "ticket")
    show_full_result_count = False
    readonly_fields = ("webhook", "ticket", "message", "event", "status", "attempts", "created_at", "delivered_at",
                       "payload")
    inlines = [WebhookAttemptInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
