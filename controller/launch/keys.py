"""SSH key pairs: reuse the user's key if EC2 already has it, else import it (never generate).

Matching is by fingerprint. EC2 computes imported-key fingerprints differently per key type: "For
RSA key pairs, the key fingerprint is the MD5 public key fingerprint as specified in section 4 of
RFC4716. For ED25519 key pairs, the key fingerprint is the base64-encoded SHA-256 digest, which is
the default for OpenSSH" (EC2 API Reference, KeyPairInfo.keyFingerprint). In practice EC2 reports
the MD5 of the DER public key for imported RSA keys, and moto the SHA-256 of the DER key: every
form is computed and any match counts.

spawn's own key pair name (``spawn-<type>-<hash of the public key>``) can be predicted by anyone
who knows the public key, so a pair found under that name is used only after checking it holds
the user's key: the public key DescribeKeyPairs returns with ``IncludePublicKey=True`` must be the
user's, else (no public key returned) its fingerprint must be one of the user's key's. A pair
under that name holding another key stops the launch (exit 2) before anything is created; an
``InvalidKeyPair.Duplicate`` on import is never taken as success without the same check.
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
            _colon(hashlib.md5(blob).digest()),  # noqa: S324 - RFC 4716 section 4
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
        resp = ec2.describe_key_pairs(Filters=[{"Name": "fingerprint", "Values": fingerprints(public_key)}],
                                      IncludePublicKey=True)
    except Exception as exc:
        raise from_aws(exc, action="describing key pairs") from exc
    pairs = sorted((p for p in resp.get("KeyPairs", []) if holds(p, public_key)),
                   key=lambda p: (p["KeyName"] != key_pair_name(public_key), str(p["KeyName"])))
    return str(pairs[0]["KeyName"]) if pairs else None


def holds(pair: dict[str, Any], public_key: str) -> bool:
    """Pure: does this DescribeKeyPairs entry hold ``public_key``?"""
    held = str(pair.get("PublicKey") or "").split()
    if len(held) >= 2:
        return held[:2] == public_key.split()[:2]
    return str(pair.get("KeyFingerprint", "")) in fingerprints(public_key)


def check_spawn_name(ec2: Any, public_key: str) -> str | None:
    """The pair under spawn's name for this key if it holds this key, None if there is none; a
    pair there with another key raises ValidationError (a read)."""
    name = key_pair_name(public_key)
    try:
        pairs = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True).get("KeyPairs", [])
    except Exception as exc:
        if aws_error_code(exc) == "InvalidKeyPair.NotFound":
            return None
        raise from_aws(exc, action=f"describing key pair {name}") from exc
    if not pairs:
        return None
    pair = pairs[0]
    if holds(pair, public_key):
        return name
    theirs = pair.get("KeyFingerprint") or "unknown"
    raise ValidationError("--ssh-key", f"key pair {name} ({pair.get('KeyPairId', 'id unknown')}) exists in "
                          f"this region but holds another public key (fingerprint {theirs}), not yours "
                          f"({fingerprints(public_key)[0]}); spawn would install that key on your "
                          "instance, so it stops here and creates nothing. If nobody you trust made it, "
                          "delete it; or pass --key-name with a key pair you made yourself")


def import_key_pair(ec2: Any, public_key: str) -> tuple[str, bool]:
    """(name, created). A pair that appeared under the name meanwhile is used only if it holds
    this key (a concurrent launch with the same key); otherwise ValidationError."""
    name = key_pair_name(public_key)
    try:
        ec2.import_key_pair(
            KeyName=name, PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair",
                                "Tags": [{"Key": "spawn:managed", "Value": "true"}]}])
    except Exception as exc:
        if aws_error_code(exc) == "InvalidKeyPair.Duplicate" and check_spawn_name(ec2, public_key) == name:
            return name, False
        raise from_aws(exc, action=f"importing key pair {name}") from exc
    return name, True


def delete_key_pair(ec2: Any, name: str) -> None:
    ec2.delete_key_pair(KeyName=name)
