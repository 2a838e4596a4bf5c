"""Files to and from hosts (base images out, snapshots back): the transports' put_path/get_path,
streamed, over SSH (a lab host's sshd) and locally."""

import os

import pytest

from agents.transport import HostConnection, LocalTransport, SSHTransport, TransferFailed

pytestmark = pytest.mark.lab


def ssh_to(host) -> SSHTransport:
    return SSHTransport(HostConnection(name=host.name, address=host.ssh_address, port=host.ssh_port,
                                       user=host.ssh_user, host_key=host.host_key,
                                       key_file=str(host.client_key_path), connect_timeout=5, command_timeout=30))


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_put_and_get_copy_whole_files(lab, tmp_path, kind):
    host = lab.hosts[0]
    transport = ssh_to(host) if kind == "ssh" else LocalTransport(HostConnection(name="here", transport="local"))
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one SFTP window, not a multiple of a block
    source = tmp_path / "image.qcow2"
    source.write_bytes(data)
    remote = f"{host.state_dir}/transfer-{kind}.part"
    try:
        transport.put_path(str(source), remote)
        back = tmp_path / "back.qcow2"
        transport.get_path(remote, str(back))
        assert back.read_bytes() == data
        with pytest.raises(TransferFailed) as missing:
            transport.get_path(f"{host.state_dir}/no-such-snapshot.qcow2", str(tmp_path / "x"))
        assert not missing.value.transient and "no-such-snapshot" in str(missing.value)
        with pytest.raises(TransferFailed):
            transport.put_path(str(tmp_path / "no-such-image"), remote)
    finally:
        if os.path.exists(remote):
            os.unlink(remote)  # the lab host's state dir is on this machine's filesystem
        transport.close()
