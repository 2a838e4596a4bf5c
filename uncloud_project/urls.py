from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from uncloud_project import views

api_v1 = [
    path("", include("accounts.api.urls")),
    path("", include("agents.api.urls")),
    path("", include("consoles.api.urls")),
    path("", include("vms.api.urls")),
    path("", include("networks.api.urls")),
    path("", include("images.api.urls")),
    path("", include("billing.api.urls")),
    path("", include("observability.api.urls")),
    path("", include("proxy.api.urls")),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Portal pages (login with a second factor, sign-up, account, projects; VMs, networks, images)
    path("", include("accounts.urls")),
    # networks before vms: vms' catch-all /vms/<uuid>/<action>/ would take /vms/<uuid>/networking/.
    path("", include("networks.urls")),
    path("", include("consoles.urls")),  # before vms too: "console" is not a verb either
    path("", include("proxy.urls")),  # and neither is "domains"
    path("", include("vms.urls")),
    path("", include("images.urls")),
    path("admin/", admin.site.urls),
    path("billing/", include("billing.urls")),
    path("", include("observability.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start script as a file: the Content-Security-Policy allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]

handler404 = "accounts.api.exceptions.not_found"
handler500 = "accounts.api.exceptions.server_error"
