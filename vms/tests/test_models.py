import pytest
from django.db import IntegrityError, transaction

from images.models import Disk
from vms.models import VM
from vms.sshkeys import SSHKeyError, parse_public_key


def test_vm_constraints(alice_project):
    VM.objects.create(project=alice_project, name="web", cores=1, memory_mib=512)
    for fields in ({"name": "web"}, {"name": "zero", "cores": 0}, {"name": "tiny", "memory_mib": 64}):
        values = {"cores": 1, "memory_mib": 512, **fields}
        with pytest.raises(IntegrityError), transaction.atomic():
            VM.objects.create(project=alice_project, **values)


def test_a_deleted_vm_frees_its_name(alice_project):
    VM.objects.create(project=alice_project, name="web", cores=1, memory_mib=512, desired_state="deleted")
    VM.objects.create(project=alice_project, name="web", cores=1, memory_mib=512)


def test_one_root_disk_per_vm(alice_project):
    vm = VM.objects.create(project=alice_project, name="web", cores=1, memory_mib=512)
    Disk.objects.create(project=alice_project, name="r", vm=vm, role="root", size_mib=1024)
    Disk.objects.create(project=alice_project, name="d", vm=vm, role="data", size_mib=1024)
    with pytest.raises(IntegrityError), transaction.atomic():
        Disk.objects.create(project=alice_project, name="r2", vm=vm, role="root", size_mib=1024)
    with pytest.raises(IntegrityError), transaction.atomic():
        Disk.objects.create(project=alice_project, name="empty", size_mib=0)


def test_ssh_key_fingerprint_matches_openssh():
    # What `ssh-keygen -lf` prints for this key.
    key = parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt x@y")
    assert key.fingerprint == "SHA256:DBTqUNobJHY8kYq9ojhXJmfJUaGfoSGKbn6zGsAV9GE"
    assert key.key_type == "ssh-ed25519" and key.comment == "x@y"
    with pytest.raises(SSHKeyError):
        parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt bad\x07comment")
