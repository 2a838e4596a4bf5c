from django.urls import path

from observability.api import views

urlpatterns = [
    path("vms/<uuid:uuid>/metrics/", views.VMMetricsView.as_view(), name="vm-metrics"),
]
