"""Base images on a hypervisor: copied there once per checksum and verified by the host. Every
storage backend starts from this local copy (a file disk overlays it, an RBD base is imported from it)."""

import secrets

from agents.hostagent import HostAgent, HostError
from images.models import Image

# Checksumming a copied image of many GiB takes a while; every other disk call (an overlay, a grow)
# is bounded by UNCLOUD_HOST_CALL_TIMEOUT. Either ends at once when the host stops answering
# its heartbeats (agents.hosts.agent_for).
IMAGE_COPY_TIMEOUT_S = 3600


def ensure_base_image(agent: HostAgent, image: Image) -> str:
    """The image's base file on the host (copied there once per checksum, verified); its path."""
    spec = {"sha256": image.checksum_sha256, "size_bytes": image.file_size_bytes}
    answer = agent.call("image-ensure", spec)
    if answer["present"]:
        return answer["path"]
    # A fresh token per attempt: two workers shipping the same image never write one file.
    spec["upload_token"] = secrets.token_hex(8)
    answer = agent.call("image-ensure", spec)
    if not answer["present"]:
        put_large_file(agent, image.location, answer["upload_path"])
        answer = agent.call("image-ensure", spec, timeout=IMAGE_COPY_TIMEOUT_S)
    if not answer["present"]:
        raise HostError("not_found", f"image {image.name} did not arrive on {agent.connection.name}")
    return answer["path"]


def put_large_file(agent: HostAgent, local_path: str, remote_path: str) -> None:
    """Stream a file to the host without holding it in memory (the host verifies its checksum)."""
    agent.transport.put_path(local_path, remote_path)
