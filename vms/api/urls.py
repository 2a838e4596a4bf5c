from django.urls import path
from rest_framework.routers import DefaultRouter

from vms.api import views

router = DefaultRouter()
router.register("vms", views.VMViewSet, basename="vm")
router.register("ssh-keys", views.SSHKeyViewSet, basename="sshkey")
urlpatterns = [
    path("hosts/<uuid:uuid>/maintenance/", views.HostMaintenanceView.as_view(), name="host-maintenance"),
    *router.urls,
]
