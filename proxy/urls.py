from django.urls import path

from proxy import views

urlpatterns = [
    path("vms/<uuid:uuid>/domains/", views.vm_domains, name="vm-domains"),
    path("vms/<uuid:uuid>/domains/add/", views.vm_domain_add, name="vm-domain-add"),
    path("vms/<uuid:uuid>/domains/<uuid:domain_uuid>/<str:what>/", views.vm_domain_change, name="vm-domain-change"),
]
