from django.urls import path

from observability import views

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("metrics/targets", views.service_discovery, name="metrics-targets"),
    path("graphs/vms/<uuid:uuid>/<str:graph>.svg", views.vm_graph, name="vm-graph"),
]
