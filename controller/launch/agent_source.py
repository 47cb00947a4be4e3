"""Where instances fetch the agent bundle from, and the sha256 the controller computed itself.

- an https URL (mirrors): downloaded once here to compute its sha256. Plain http is refused, here
  and in the flags: the bundle runs as root with the instance's role, and whoever is on the path
  could swap it (for the controller's download as much as for the instance's);
- a local file: uploaded to a private bucket in the user's own account
  (``spawn-agent-<account>-<region>``, public access blocked, ``ExpectedBucketOwner`` on every
  call), under a content-addressed key, and fetched through a pre-signed GET URL that expires
  after ``PRESIGN_EXPIRY`` (long enough for a slow boot, short enough to be useless later).
  Bucket names are global: when another account already owns that name, spawn uses
  ``spawn-agent-<account>-<region>-<8 hex>`` instead, and finds it again on every later launch in
  the account's own bucket list (``choose_bucket``): no parameter store, no extra state;
- neither: ``controller.bundle`` builds one from this installation (cached after the first).
The instance never needs PyPI or any public bucket.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.bundle import sha256_file
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


def sha256_url(url: str) -> str:
    """Download once (streamed, bounded) and hash."""
    import requests

    digest = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=(5, 60)) as resp:
            hops = [r.url for r in resp.history] + [resp.url]
            if not all(hop.lower().startswith("https://") for hop in hops):
                raise ValidationError("--agent-bundle", f"{url} redirects to plain http "
                                      f"({' -> '.join(hops)}); refused")
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


def _owned_buckets(s3: Any, prefix: str) -> list[str] | None:
    """Names of the buckets the caller's own account owns that start with ``prefix``; None when
    s3:ListAllMyBuckets is denied. ListBuckets "returns a list of all buckets owned by the
    authenticated sender of the request" (S3 API Reference, ListBuckets), so a bucket another
    account made under a spawn-like name never shows up here."""
    names: list[str] = []
    kwargs: dict[str, Any] = {"Prefix": prefix, "MaxBuckets": 1000}
    while True:
        try:
            page = s3.list_buckets(**kwargs)
        except Exception as exc:
            if aws_error_code(exc) in {"AccessDenied", "403"}:
                return None
            raise from_aws(exc, action="listing the account's buckets") from exc
        names += [str(b["Name"]) for b in page.get("Buckets", []) if str(b["Name"]).startswith(prefix)]
        token = page.get("ContinuationToken")
        if not token:
            return sorted(names)
        kwargs["ContinuationToken"] = token


def choose_bucket(s3: Any, account: str, region: str) -> str:
    """The bundle bucket for this account and region (reads only; created later if absent).

    ``spawn-agent-<account>-<region>`` unless another account owns that name. S3 bucket names are
    shared by all accounts (CreateBucket answers BucketAlreadyExists: "The requested bucket name
    is not available. The bucket namespace is shared by all users of the system"), and anyone can
    predict this one. HeadBucket with ``ExpectedBucketOwner`` "fails with the HTTP status code 403
    Forbidden (access denied)" when "the account ID that you provide does not match the actual
    owner of the bucket" (S3 API Reference, HeadBucket). Then the fallback is
    ``<that name>-<8 hex>``: the first such bucket the account already owns, or a new name.

    moto ignores ExpectedBucketOwner on HeadBucket (it answers 200 for another account's bucket),
    so a 200 is confirmed against the account's own bucket list where ListBuckets is allowed.
    """
    primary = bucket_name(account, region)
    try:
        s3.head_bucket(Bucket=primary, ExpectedBucketOwner=account)
        status = "found"
    except Exception as exc:
        code = aws_error_code(exc)
        if code in {"404", "NoSuchBucket", "NotFound"}:
            return primary  # free: launch creates it
        if code not in {"403", "AccessDenied", "Forbidden"}:
            raise from_aws(exc, action=f"checking bucket {primary}") from exc
        status = "not ours"
    owned = _owned_buckets(s3, primary)
    if status == "found" and (owned is None or primary in owned):
        return primary
    if owned is None:
        raise AwsError(f"bucket {primary} belongs to another account; spawn then keeps the agent in "
                       f"a bucket named {primary}-<suffix> and finds it again with "
                       "s3:ListAllMyBuckets, which your credentials may not use",
                       aws_code="AccessDenied",
                       hint="allow s3:ListAllMyBuckets (spawn iam cli-policy includes it)")
    fallbacks = [name for name in owned if name.startswith(primary + "-")]
    return fallbacks[0] if fallbacks else f"{primary}-{secrets.token_hex(4)}"


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
        if aws_error_code(exc) == "BucketAlreadyExists":  # another account took it since the launch looked
            raise AwsError(f"bucket {bucket} was just created by another account; nothing was "
                           "uploaded", aws_code="BucketAlreadyExists",
                           hint="run the launch again: it then uses a bucket name of its own") from None
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
    if flag and flag[:7].lower() == "http://":
        raise ValidationError("--agent-bundle", f"{flag!r}: plain http is refused; accepted: a local "
                              "file or an https:// URL")
    if flag and flag[:8].lower() == "https://":
        return AgentSource(url=flag, sha256=sha256_url(flag), origin="url")
    path = Path(flag) if flag else build_local_bundle(architecture)
    if not path.is_file():
        raise ValidationError("--agent-bundle", f"{str(path)!r} is not a file")
    sha = sha256_file(path)
    bucket, key = choose_bucket(s3, account, region), object_key(sha, path)
    return AgentSource(url=presign(s3, bucket, key), sha256=sha, origin="s3" if flag else "built",
                       bucket=bucket, key=key, local_path=str(path))
