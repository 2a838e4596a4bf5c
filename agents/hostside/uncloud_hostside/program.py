"""The artifact this program runs from: the shipped zipapp (see ../build.py).

The package's modules live inside that archive, so no module's __file__ names a plain file; the
zip importer that loaded them knows the archive's path. The checksum host-info reports, and the
program the metadata service is started as, are both that archive.
"""

import hashlib

from .errors import HostsideError


def program_path():
    archive = getattr(__loader__, "archive", None)
    if archive is None:
        raise HostsideError("not_shipped", "the host-side program runs from its zipapp only "
                                           "(python3 agents/hostside/build.py builds it)")
    return archive


def program_checksum():
    with open(program_path(), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
