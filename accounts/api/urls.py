from rest_framework.routers import DefaultRouter

from accounts.api import views

router = DefaultRouter(trailing_slash=True)
router.register("projects", views.ProjectViewSet, basename="project")
router.register("tokens", views.APITokenViewSet, basename="token")
router.register("invitations", views.MyInvitationViewSet, basename="invitation")
urlpatterns = router.urls
