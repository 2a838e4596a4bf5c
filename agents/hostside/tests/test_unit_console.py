"""console-pipe's checks without a host: what it refuses before touching any socket."""
import os

import pytest

from agents.hostside.uncloud_hostside.console import parse_console_spec, read_spec_line
from agents.hostside.uncloud_hostside.errors import HostsideError

VM = "8c000000-0000-4000-8000-000000000001"


def spec(tmp_path, **extra):
    return {"state_dir": "/srv/uc", "uuid": VM, **extra}  # nothing is opened: the path need not exist


@pytest.mark.parametrize("extra, message", [
    ({"kind": "rdp"}, "kind must be vnc or serial"),
    ({"kind": "vnc"}, "vnc_password must be 8"),
    ({"kind": "vnc", "vnc_password": "short"}, "vnc_password must be 8"),
    ({"kind": "vnc", "vnc_password": "abc,efgh"}, "vnc_password must be 8"),
    ({"kind": "serial", "password_valid_s": 0}, "password_valid_s"),
    ({"kind": "serial", "path": "/etc/shadow"}, "path"),
])
def test_bad_specs_are_refused(tmp_path, extra, message):
    with pytest.raises(HostsideError) as refused:
        parse_console_spec(spec(tmp_path, **extra))
    assert refused.value.code == "bad_spec" and message in refused.value.message


def test_a_good_spec_and_the_bytes_after_its_line(tmp_path):
    console = parse_console_spec(spec(tmp_path, kind="vnc", vnc_password="Ab3dEf7h"))
    assert console["kind"] == "vnc" and console["password_valid_s"] == 30
    reader, writer = os.pipe()
    os.write(writer, b'{"kind": "serial"}\nRFB 003.008\n')
    os.close(writer)
    assert read_spec_line(reader) == ({"kind": "serial"}, b"RFB 003.008\n")
    os.close(reader)


def test_a_spec_line_that_never_ends_is_refused():
    reader, writer = os.pipe()
    os.write(writer, b"x" * 5000)
    os.close(writer)
    with pytest.raises(HostsideError) as refused:
        read_spec_line(reader)
    assert "too long" in refused.value.message
    os.close(reader)
