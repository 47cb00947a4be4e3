"""SSH key pairs: reuse the user's key if EC2 already has it, else import it (never generate).

Matching is by fingerprint. EC2 computes imported-key fingerprints differently per key type
(ED25519: base64 SHA-256 of the OpenSSH key blob; RSA: MD5 of the DER public key), and some
implementations use SHA-256 of the DER key: every form is computed and any match counts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from spored.errors import ValidationError, aws_error_code, from_aws


def _colon(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def fingerprints(public_key: str) -> list[str]:
    """Every fingerprint form EC2 may report for ``public_key`` (an OpenSSH public key line)."""
    from cryptography.hazmat.primitives import serialization

    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
        key = serialization.load_ssh_public_key(public_key.encode())
    except (ValueError, IndexError, binascii.Error) as exc:
        raise ValidationError("--ssh-key", f"not a valid OpenSSH public key ({exc})") from None
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    sha_blob = base64.b64encode(hashlib.sha256(blob).digest()).decode()
    return [sha_blob, sha_blob.rstrip("="), _colon(hashlib.md5(der).digest()),  # noqa: S324 - EC2's format
            _colon(hashlib.sha256(der).digest()), _colon(hashlib.sha1(der).digest())]  # noqa: S324


def key_pair_name(public_key: str) -> str:
    """Content-derived, so equal keys share a name across machines."""
    digest = hashlib.sha256(public_key.split()[1].encode()).hexdigest()[:16]
    kind = re.sub(r"[^a-z0-9]", "", public_key.split(maxsplit=1)[0].removeprefix("ssh-"))
    return f"spawn-{kind}-{digest}"


def require_key_pair(ec2: Any, key_name: str) -> None:
    """--key-name must exist (a read)."""
    try:
        ec2.describe_key_pairs(KeyNames=[key_name])
    except Exception as exc:
        if aws_error_code(exc) == "InvalidKeyPair.NotFound":
            raise ValidationError("--key-name", f"no key pair named {key_name!r} in this region") from None
        raise from_aws(exc, action="describing key pairs") from exc


def find_key_pair(ec2: Any, public_key: str) -> str | None:
    """The name of an existing key pair with this key's fingerprint, if any (a read)."""
    try:
        resp = ec2.describe_key_pairs(Filters=[{"Name": "fingerprint", "Values": fingerprints(public_key)}])
    except Exception as exc:
        raise from_aws(exc, action="describing key pairs") from exc
    pairs = resp.get("KeyPairs", [])
    return str(pairs[0]["KeyName"]) if pairs else None


def import_key_pair(ec2: Any, public_key: str) -> tuple[str, bool]:
    """(name, created). A concurrent import of the same key is treated as found."""
    name = key_pair_name(public_key)
    try:
        ec2.import_key_pair(
            KeyName=name, PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair",
                                "Tags": [{"Key": "spawn:managed", "Value": "true"}]}])
    except Exception as exc:
        if aws_error_code(exc) == "InvalidKeyPair.Duplicate":
            return name, False
        raise from_aws(exc, action=f"importing key pair {name}") from exc
    return name, True


def delete_key_pair(ec2: Any, name: str) -> None:
    ec2.delete_key_pair(KeyName=name)
