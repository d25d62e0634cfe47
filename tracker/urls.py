from django.urls import path, re_path

from tracker import chart_views, token_views, views

app_name = "tracker"

urlpatterns = [
    path("", views.home, name="home"),
    path("w/<slug:slug>/", views.workspace_home, name="workspace-home"),
    path("w/<slug:slug>/experiments/", views.experiment_list, name="experiment-list"),
    path("w/<slug:slug>/experiments/new/", views.experiment_create, name="experiment-create"),
    path("experiments/<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path("experiments/<int:pk>/edit/", views.experiment_edit, name="experiment-edit"),
    path("experiments/<int:pk>/archive/", views.experiment_archive, name="experiment-archive"),
    path("experiments/<int:pk>/unarchive/", views.experiment_unarchive, name="experiment-unarchive"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<uuid:run_id>/tags/", views.run_tag_set, name="run-tag-set"),
    path("runs/<uuid:run_id>/tags/delete/", views.run_tag_delete, name="run-tag-delete"),
    path("runs/<uuid:run_id>/artifacts/", views.run_artifacts, name="run-artifacts"),
    path("runs/<uuid:run_id>/artifacts/<int:artifact_id>/download", views.artifact_download, name="artifact-download"),
    path("runs/<uuid:run_id>/artifacts/<int:artifact_id>/raw", views.artifact_raw, name="artifact-raw"),
    path("compare/", views.compare, name="compare"),
    # Chart data for pages (session auth): tracker/chart_views.py
    re_path(r"^runs/(?P<run_id>[0-9a-f-]{36})/metrics/(?P<key>.+)\.json$", chart_views.metric_chart_json, name="metric-chart"),
    re_path(r"^runs/(?P<run_id>[0-9a-f-]{36})/metrics/(?P<key>.+)\.csv$", chart_views.metric_csv, name="metric-csv"),
    # Personal API tokens: tracker/token_views.py
    path("settings/tokens/", token_views.token_list, name="token-list"),
]
