from rest_framework.routers import DefaultRouter

from images.api import views

router = DefaultRouter()
router.register("images", views.ImageViewSet, basename="image")
router.register("disks", views.DiskViewSet, basename="disk")
router.register("snapshots", views.SnapshotViewSet, basename="snapshot")
urlpatterns = router.urls
