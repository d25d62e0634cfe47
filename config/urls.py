from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tracker.api.urls")),
    path("api/v1/", include("jobs.api_urls")),
    path("api/v1/", include("registry.api_urls")),
    path("", include("tracker.urls")),
    path("", include("jobs.urls")),
    path("", include("registry.urls")),
]

handler404 = "tracker.views.page_not_found"
