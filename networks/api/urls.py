from rest_framework.routers import DefaultRouter

from networks.api import views

router = DefaultRouter()
router.register("networks", views.NetworkViewSet, basename="network")
urlpatterns = router.urls
