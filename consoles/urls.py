from django.urls import path

from consoles import views

urlpatterns = [
    path("vms/<uuid:uuid>/console/", views.vm_console, name="vm-console"),
]
