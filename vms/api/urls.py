from rest_framework.routers import DefaultRouter

from vms.api import views

router = DefaultRouter()
router.register("vms", views.VMViewSet, basename="vm")
router.register("ssh-keys", views.SSHKeyViewSet, basename="sshkey")
urlpatterns = router.urls
