from django.urls import path
from rest_framework.routers import DefaultRouter

from vms.api import disks, networking, views

router = DefaultRouter()
router.register("vms", views.VMViewSet, basename="vm")
router.register("ssh-keys", views.SSHKeyViewSet, basename="sshkey")
router.register("nics", networking.NICViewSet, basename="nic")
router.register("ipv4-addresses", networking.IPv4AddressViewSet, basename="ipv4address")
urlpatterns = [
    path("hosts/<uuid:uuid>/maintenance/", views.HostMaintenanceView.as_view(), name="host-maintenance"),
    path("vms/<uuid:uuid>/firewall/", networking.FirewallView.as_view(), name="vm-firewall"),
    path("disks/<uuid:uuid>/attach/", disks.DiskAttachView.as_view(), name="disk-attach"),
    *router.urls,
]
