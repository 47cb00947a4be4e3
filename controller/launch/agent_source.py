"""Where instances fetch the agent bundle from, and the sha256 the controller computed itself.

- an http(s) URL (mirrors, tests): downloaded once here to compute its sha256;
- a local file: uploaded to a private bucket in the user's own account
  (``spawn-agent-<account>-<region>``, public access blocked, ``ExpectedBucketOwner`` on every
  call), under a content-addressed key, and fetched through a pre-signed GET URL that expires
  after ``PRESIGN_EXPIRY`` (long enough for a slow boot, short enough to be useless later);
- neither: ``controller.bundle`` builds one from this installation (cached after the first).
The instance never needs PyPI or any public bucket.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spored.errors import AwsError, ValidationError, aws_error_code, from_aws

PRESIGN_EXPIRY_SECONDS = 2 * 3600
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
KEY_PREFIX = "spored-bundle/"


@dataclass(frozen=True)
class AgentSource:
    url: str
    sha256: str
    origin: str  # "url" | "s3" | "built"
    bucket: str | None = None
    key: str | None = None
    local_path: str | None = None


@dataclass
class Uploaded:
    bucket: str
    key: str
    object_created: bool
    bucket_created: bool


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_url(url: str) -> str:
    """Download once (streamed, bounded) and hash."""
    import requests

    digest = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=(5, 60)) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                size += len(chunk)
                if size > MAX_BUNDLE_BYTES:
                    raise ValidationError("--agent-bundle", f"{url} is larger than {MAX_BUNDLE_BYTES} bytes")
                digest.update(chunk)
    except requests.RequestException as exc:
        raise ValidationError("--agent-bundle", f"cannot download {url}: {exc}") from None
    return digest.hexdigest()


def bucket_name(account: str, region: str) -> str:
    return f"spawn-agent-{account}-{region}"


def object_key(sha256: str, path: Path) -> str:
    return f"{KEY_PREFIX}{sha256}/{path.name}"


def build_local_bundle(architecture: str) -> Path:
    """The bundle built from this installation (cached; the first launch builds it with pip).

    One bundle serves every architecture: the agent and its dependencies are pure Python."""
    from controller import bundle

    return bundle.ensure_bundle().path


def presign(s3: Any, bucket: str, key: str) -> str:
    return str(s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                         ExpiresIn=PRESIGN_EXPIRY_SECONDS))


def ensure_bucket(s3: Any, bucket: str, account: str, region: str) -> bool:
    """Create the private bucket if absent; True when this call created it."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
        return False
    except Exception as exc:
        if aws_error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            if aws_error_code(exc) in {"403", "AccessDenied"}:
                raise AwsError(f"bucket {bucket} exists but is not yours (or not readable); refusing "
                               "to upload the agent there", aws_code="403") from None
            raise from_aws(exc, action=f"checking bucket {bucket}") from exc
    kwargs: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except Exception as exc:
        if aws_error_code(exc) == "BucketAlreadyOwnedByYou":
            return False
        raise from_aws(exc, action=f"creating bucket {bucket}") from exc
    s3.put_public_access_block(
        Bucket=bucket, ExpectedBucketOwner=account,
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                        "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    return True


def upload(s3: Any, source: AgentSource, account: str, region: str) -> Uploaded:
    """Put the bundle in place (content-addressed: skipped when already there)."""
    assert source.bucket and source.key and source.local_path  # noqa: S101 - set by resolve()
    created_bucket = ensure_bucket(s3, source.bucket, account, region)
    try:
        s3.head_object(Bucket=source.bucket, Key=source.key, ExpectedBucketOwner=account)
        return Uploaded(source.bucket, source.key, object_created=False, bucket_created=created_bucket)
    except Exception as exc:
        if aws_error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
            raise from_aws(exc, action=f"checking s3://{source.bucket}/{source.key}") from exc
    with open(source.local_path, "rb") as body:
        try:
            s3.put_object(Bucket=source.bucket, Key=source.key, Body=body,
                          ExpectedBucketOwner=account, ServerSideEncryption="AES256",
                          Tagging="spawn:managed=true")
        except Exception as exc:
            raise from_aws(exc, action=f"uploading the agent bundle to s3://{source.bucket}") from exc
    return Uploaded(source.bucket, source.key, object_created=True, bucket_created=created_bucket)


def delete_object(s3: Any, uploaded: Uploaded, account: str) -> None:
    s3.delete_object(Bucket=uploaded.bucket, Key=uploaded.key, ExpectedBucketOwner=account)


def resolve(flag: str | None, *, s3: Any, account: str, region: str, architecture: str) -> AgentSource:
    """Work out URL and sha256 (reads and local work only; the upload happens later)."""
    if flag and flag.startswith(("http://", "https://")):
        return AgentSource(url=flag, sha256=sha256_url(flag), origin="url")
    path = Path(flag) if flag else build_local_bundle(architecture)
    if not path.is_file():
        raise ValidationError("--agent-bundle", f"{str(path)!r} is not a file")
    sha = sha256_file(path)
    bucket, key = bucket_name(account, region), object_key(sha, path)
    return AgentSource(url=presign(s3, bucket, key), sha256=sha, origin="s3" if flag else "built",
                       bucket=bucket, key=key, local_path=str(path))
