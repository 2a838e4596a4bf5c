from django.urls import path
from rest_framework.routers import DefaultRouter

from networks.api import views

router = DefaultRouter()
router.register("networks", views.NetworkViewSet, basename="network")
router.register("nics", views.NICViewSet, basename="nic")
router.register("ipv4-addresses", views.IPv4AddressViewSet, basename="ipv4address")
urlpatterns = [
    path("vms/<uuid:uuid>/firewall/", views.FirewallView.as_view(), name="vm-firewall"),
    *router.urls,
]
