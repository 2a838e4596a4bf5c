from django.urls import path

from networks import views

urlpatterns = [
    path("networks/", views.network_list, name="networks"),
    path("networks/<uuid:uuid>/", views.network_detail, name="network"),
    path("networks/<uuid:uuid>/delete/", views.network_delete, name="network-delete"),
]
