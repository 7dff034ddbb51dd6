"""Console URLs, mounted at /console/ by kbservice.urls."""

from django.urls import path

from chat.views import auth, inbox, insights, workbench

app_name = "console"

urlpatterns = [
    path("", inbox.inbox, name="inbox"),
    path("login/", auth.ConsoleLoginView.as_view(), name="login"),
    path("logout/", auth.ConsoleLogoutView.as_view(), name="logout"),
    path("tickets/<uuid:public_id>/", inbox.ticket, name="ticket"),
    path("tickets/<uuid:public_id>/act", inbox.ticket_act, name="ticket-act"),
    path("tickets/<uuid:public_id>/reply", inbox.ticket_reply, name="ticket-reply"),
    path("tickets/<uuid:public_id>/questions/<int:question_id>/act", inbox.question_act, name="question-act"),
    path("workbench/", workbench.workbench, name="workbench"),
    path("workbench/runs/<int:pk>/", workbench.run_detail, name="workbench-run"),
    path("workbench/runs/<int:pk>.csv", workbench.run_csv, name="workbench-run-csv"),
    path("insights/", insights.dashboard, name="insights"),
    path("insights/queue/", insights.queue, name="insights-queue"),
    path("insights/entries/", insights.entries, name="insights-entries"),
]
