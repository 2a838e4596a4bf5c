from django.urls import path

from vms import views

urlpatterns = [
    path("vms/", views.vm_list, name="vms"),
    path("vms/new/", views.vm_create, name="vm-create"),
    path("vms/status.json", views.vm_status_json, name="vm-status"),
    path("vms/<uuid:uuid>/", views.vm_detail, name="vm"),
    path("vms/<uuid:uuid>/<str:verb>/", views.vm_action, name="vm-action"),
    path("ssh-keys/", views.ssh_keys, name="ssh-keys"),
    path("ssh-keys/<uuid:uuid>/delete/", views.ssh_key_delete, name="ssh-key-delete"),
]
