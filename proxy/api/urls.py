from rest_framework.routers import DefaultRouter

from proxy.api import views

router = DefaultRouter()
router.register("domains", views.DomainNameViewSet, basename="domain")
urlpatterns = router.urls
