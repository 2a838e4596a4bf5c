import json

from django.contrib.auth import get_user_model
from django.core.management import call_command

from agents.models import Host, Operation
from images.models import Image
from networks.models import Network, PrefixPool


def test_bootstrap_is_idempotent_and_makes_a_usable_installation(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    call_command("bootstrap", "--local-host", "--demo-image")
    call_command("bootstrap", "--local-host", "--demo-image")
    users = get_user_model().objects
    assert users.get(username="admin").is_staff and not users.get(username="demo").is_staff
    credentials = json.loads((tmp_path / "credentials.json").read_text())
    assert users.get(username="demo").check_password(credentials["demo"])
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0
    assert PrefixPool.objects.count() == 1 and Network.objects.filter(is_public=True).count() == 1
    host = Host.objects.get()
    assert host.transport == "local" and len(host.state_dir) <= 57
    assert Operation.objects.filter(kind="host.check", host=host).count() == 2
    image = Image.objects.get()
    assert image.name == "uncloud-demo" and image.status == "available" and image.is_public
    assert len(image.checksum_sha256) == 64 and image.virtual_size_bytes > 0
