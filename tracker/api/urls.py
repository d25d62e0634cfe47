from django.urls import path, re_path

from tracker.api import schema, views

app_name = "api"

RUN = r"^runs/(?P<run_id>[0-9a-fA-F-]{32,36})"

urlpatterns = [
    path("schema", schema.openapi_schema, name="schema"),
    path("docs", schema.api_docs, name="docs"),
    path("whoami", views.whoami, name="whoami"),
    path("experiments", views.experiments, name="experiments"),
    path("experiments/<int:pk>", views.experiment_detail, name="experiment-detail"),
    path("runs", views.runs, name="runs"),
    re_path(RUN + r"$", views.run_detail, name="run-detail"),
    re_path(RUN + r"/params$", views.run_params, name="run-params"),
    re_path(RUN + r"/tags$", views.run_tags, name="run-tags"),
    re_path(RUN + r"/progress$", views.run_progress, name="run-progress"),
    re_path(RUN + r"/metrics$", views.run_metrics, name="run-metrics"),
    re_path(RUN + r"/metrics/(?P<key>.+)/history$", views.metric_history, name="metric-history"),
    re_path(RUN + r"/metrics/(?P<key>.+)/chart$", views.metric_chart, name="metric-chart"),
    re_path(RUN + r"/metrics/(?P<key>.+)/csv$", views.metric_csv, name="metric-csv"),
    re_path(RUN + r"/artifacts$", views.run_artifacts, name="run-artifacts"),
    re_path(RUN + r"/artifacts/(?P<path>.+)$", views.artifact, name="artifact"),
]
