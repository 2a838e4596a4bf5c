from django.urls import path

from consoles.api import views

urlpatterns = [
    path("vms/<uuid:uuid>/console/", views.ConsoleView.as_view(), name="vm-console-ticket"),
    path("vms/<uuid:uuid>/console/sessions/", views.ConsoleSessionsView.as_view(), name="vm-console-sessions"),
]
