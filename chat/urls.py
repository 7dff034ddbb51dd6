from django.urls import path

from chat import apis

urlpatterns = [
    path("ask", apis.AskApi.as_view(), name="ask"),
    path("tickets", apis.TicketListCreateApi.as_view(), name="tickets"),
    path("tickets/<uuid:public_id>", apis.TicketDetailApi.as_view(), name="ticket"),
    path("tickets/<uuid:public_id>/questions", apis.TicketQuestionApi.as_view(), name="ticket-questions"),
    path("tickets/<uuid:public_id>/messages", apis.TicketMessagesApi.as_view(), name="ticket-messages"),
    path("tickets/<uuid:public_id>/replies", apis.TicketReplyApi.as_view(), name="ticket-replies"),
    path("tickets/<uuid:public_id>/handoff", apis.TicketHandOffApi.as_view(), name="ticket-handoff"),
    path("tickets/<uuid:public_id>/resolve", apis.TicketResolveApi.as_view(), name="ticket-resolve"),
    path("feedback", apis.FeedbackApi.as_view(), name="feedback"),
]
