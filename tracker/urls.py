from django.urls import path, re_path

from tracker import chart_views, token_views, views

app_name = "tracker"

urlpatterns = [
    path("", views.home, name="home"),
    path("w/<slug:slug>/", views.workspace_home, name="workspace-home"),
    # Chart data for pages (session auth): tracker/chart_views.py
    re_path(r"^runs/(?P<run_id>[0-9a-f-]{36})/metrics/(?P<key>.+)\.json$", chart_views.metric_chart_json, name="metric-chart"),
    re_path(r"^runs/(?P<run_id>[0-9a-f-]{36})/metrics/(?P<key>.+)\.csv$", chart_views.metric_csv, name="metric-csv"),
    # Personal API tokens: tracker/token_views.py
    path("settings/tokens/", token_views.token_list, name="token-list"),
]
