from django.urls import path

from networks import views

urlpatterns = [
    path("networks/", views.network_list, name="networks"),
    path("networks/<uuid:uuid>/", views.network_detail, name="network"),
    path("networks/<uuid:uuid>/delete/", views.network_delete, name="network-delete"),
    path("vms/<uuid:uuid>/networking/", views.vm_networking, name="vm-networking"),
    path("vms/<uuid:uuid>/networking/attach/", views.vm_nic_attach, name="vm-nic-attach"),
    path("vms/<uuid:uuid>/networking/nics/<uuid:nic_uuid>/detach/", views.vm_nic_detach, name="vm-nic-detach"),
    path("vms/<uuid:uuid>/networking/rules/add/", views.vm_rule_add, name="vm-rule-add"),
    path("vms/<uuid:uuid>/networking/rules/<uuid:rule_uuid>/remove/", views.vm_rule_remove, name="vm-rule-remove"),
    path("vms/<uuid:uuid>/networking/ipv4/<str:what>/", views.vm_ipv4, name="vm-ipv4"),
]
