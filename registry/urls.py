from django.urls import path

from registry import views

app_name = "registry"

urlpatterns = [
    path("w/<slug:slug>/models/", views.model_list, name="model-list"),
]
