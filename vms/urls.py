from django.urls import path

from vms import networking_views, views

urlpatterns = [
    path("vms/", views.vm_list, name="vms"),
    path("vms/new/", views.vm_create, name="vm-create"),
    path("vms/status.json", views.vm_status_json, name="vm-status"),
    path("vms/<uuid:uuid>/", views.vm_detail, name="vm"),
    # Before vm-action: "networking" is not a verb.
    path("vms/<uuid:uuid>/networking/", networking_views.vm_networking, name="vm-networking"),
    path("vms/<uuid:uuid>/networking/attach/", networking_views.vm_nic_attach, name="vm-nic-attach"),
    path("vms/<uuid:uuid>/networking/nics/<uuid:nic_uuid>/detach/", networking_views.vm_nic_detach,
         name="vm-nic-detach"),
    path("vms/<uuid:uuid>/networking/rules/add/", networking_views.vm_rule_add, name="vm-rule-add"),
    path("vms/<uuid:uuid>/networking/rules/<uuid:rule_uuid>/remove/", networking_views.vm_rule_remove,
         name="vm-rule-remove"),
    path("vms/<uuid:uuid>/networking/ipv4/<str:what>/", networking_views.vm_ipv4, name="vm-ipv4"),
    path("vms/<uuid:uuid>/resize/", views.vm_resize, name="portal-vm-resize"),  # a page, not a one-click verb
    path("vms/<uuid:uuid>/<str:verb>/", views.vm_action, name="vm-action"),
    path("ssh-keys/", views.ssh_keys, name="ssh-keys"),
    path("ssh-keys/<uuid:uuid>/delete/", views.ssh_key_delete, name="ssh-key-delete"),
]
