from rest_framework.routers import DefaultRouter

from agents.api import views

router = DefaultRouter()
router.register("hosts", views.HostViewSet, basename="host")
router.register("operations", views.OperationViewSet, basename="operation")
urlpatterns = router.urls
