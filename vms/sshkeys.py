"""Parse and check an OpenSSH public key line without trusting any of it."""

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from vms.choices import SSHKeyType

MIN_RSA_BITS = 2048
_COMMENT = re.compile(r"^[\x20-\x7e]{0,200}$")


class SSHKeyError(ValueError):
    pass


@dataclass(frozen=True)
class ParsedKey:
    key_type: str
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        encoded = base64.b64encode(self.blob).decode()
        return f"{self.key_type} {encoded}" + (f" {self.comment}" if self.comment else "")


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise SSHKeyError("the key data is truncated")
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise SSHKeyError("the key data is truncated")
    return blob[offset + 4 : end], end


def parse_public_key(text: str) -> ParsedKey:
    if not isinstance(text, str) or len(text) > 16384:
        raise SSHKeyError("an SSH public key is one line of at most 16 KiB")
    text = text.strip()
    if "\n" in text or "\r" in text or "\x00" in text:
        raise SSHKeyError("paste exactly one public key line")
    parts = text.split(None, 2)
    if len(parts) < 2:
        raise SSHKeyError("expected '<type> <base64 data> [comment]', e.g. 'ssh-ed25519 AAAA... me@laptop'")
    key_type, data = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    if key_type not in SSHKeyType.values:
        raise SSHKeyError(f"unsupported key type {key_type[:40]!r}; use one of: {', '.join(SSHKeyType.values)}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SSHKeyError("the key data is not valid base64") from None
    inner_type, offset = _read_string(blob, 0)
    if inner_type.decode(errors="replace") != key_type:
        raise SSHKeyError("the key data does not match its type")
    if key_type == SSHKeyType.RSA:
        _exponent, offset = _read_string(blob, offset)
        modulus, offset = _read_string(blob, offset)
        bits = int.from_bytes(modulus, "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise SSHKeyError(f"RSA keys need at least {MIN_RSA_BITS} bits (this one has {bits})")
    elif key_type in (SSHKeyType.ED25519, SSHKeyType.SK_ED25519):
        public, offset = _read_string(blob, offset)
        if len(public) != 32:
            raise SSHKeyError("an Ed25519 key is 32 bytes")
    if not _COMMENT.match(comment):
        raise SSHKeyError("the comment may only hold printable ASCII (at most 200 characters)")
    return ParsedKey(key_type, blob, comment)
