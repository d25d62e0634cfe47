from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config.views import LoginView, admin_login

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tracker.api.urls")),
    path("api/v1/", include("jobs.api_urls")),
    path("api/v1/", include("registry.api_urls")),
    path("", include("tracker.mlflow_compat.urls")),
    path("", include("tracker.urls")),
    path("", include("jobs.urls")),
    path("", include("registry.urls")),
]

handler404 = "tracker.views.page_not_found"
