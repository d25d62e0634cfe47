from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("w/<slug:slug>/clusters/", views.cluster_list, name="cluster-list"),
]
