"""A missing bucket, a missing object, no credentials, refused credentials and denied access
each give their own error class and message, on S3 and GCS, for reads and writes.

Every case is produced by a server over HTTP, never by patching s3fs/gcsfs:

- S3: the moto server of ``tests/conftest.py``. Missing buckets and objects need nothing more;
  credentials and permissions need moto's IAM authentication, which is off until
  ``POST /moto-api/reset-auth`` sets the number of unauthenticated requests allowed (0 here):
  the :func:`s3_auth` fixture creates IAM users first, turns it on, and turns it off again.
- GCS: fake-gcs-server for missing buckets and objects. It checks no credentials, so 401 and
  403 come from :mod:`canned_store`, which answers with the error documents GCS sends.
- S3's ``ExpiredToken`` (moto has no expiring tokens) also comes from :mod:`canned_store`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from canned_store import canned_store, gcs_error, s3_error

import medmask
import medmask.io
from medmask import SegmentationMask
from medmask.errors import (
    BucketNotFoundError,
    MaskFileNotFoundError,
    StorageCredentialsError,
    StorageError,
    StoragePermissionError,
)
from servers import BucketFixture

S3_HINT = (
    "pass credentials with storage_options={'key': KEY, 'secret': SECRET} (and 'token' for "
    "temporary ones) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
)
GCS_HINT = (
    "pass credentials with storage_options={'token': 'service-account.json'} (or "
    "'google_default') or set GOOGLE_APPLICATION_CREDENTIALS."
)
GCS_ANONYMOUS = (
    "Anonymous caller does not have storage.objects.get access to the Google Cloud Storage "
    "object. Permission 'storage.objects.get' denied on resource (or it may not exist)."
)
GCS_BAD_TOKEN = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)
GCS_DENIED = (
    "reader@project.iam.gserviceaccount.com does not have storage.objects.get access to the "
    "Google Cloud Storage object."
)


def _mask() -> SegmentationMask:
    data = np.zeros((2, 3, 4), np.uint8)
    data[0, 1, 1:3] = 1
    return SegmentationMask(data, {"liver": 1})


def _raises(cls: type[Exception], call: Any) -> Exception:
    """The error ``call()`` raises; it must be exactly ``cls`` (not a sibling or subclass)."""
    with pytest.raises(cls) as info:
        call()
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    assert info.value.__cause__ is not None  # the backend's own exception stays chained
    return info.value


def _load(url: str, options: dict[str, Any]) -> Any:
    return lambda: medmask.load_mask(url, storage_options=options)


def _save(url: str, options: dict[str, Any], overwrite: bool = True) -> Any:
    return lambda: medmask.save_mask(_mask(), url, storage_options=options, overwrite=overwrite)


def _write_archive(url: str, options: dict[str, Any]) -> None:
    with medmask.MaskArchive(url, "w", storage_options=options) as archive:
        archive.add_segmask(_mask(), "organs")


# --- the class tree -------------------------------------------------------------------------


def test_new_classes_keep_the_old_ones_as_bases() -> None:
    # code written for the classes raised before (MaskFileNotFoundError for a missing bucket,
    # StoragePermissionError for missing credentials) keeps catching them
    assert issubclass(BucketNotFoundError, MaskFileNotFoundError)
    assert issubclass(BucketNotFoundError, StorageError)
    assert issubclass(BucketNotFoundError, FileNotFoundError)
    assert issubclass(StorageCredentialsError, StoragePermissionError)
    assert issubclass(StorageCredentialsError, PermissionError)
    assert medmask.BucketNotFoundError is BucketNotFoundError
    assert medmask.StorageCredentialsError is StorageCredentialsError


# --- S3: missing bucket, missing object -----------------------------------------------------


def _check_missing_bucket(scheme: str, options: dict[str, Any]) -> str:
    """Reads, writes, exclusive writes and archive writes to a missing bucket: one message
    each; returns the reading message."""
    url = f"{scheme}://no-such-bucket/case.msk"
    reading = f"{url}: bucket 'no-such-bucket' does not exist (reading failed)."
    assert str(_raises(BucketNotFoundError, _load(url, options))) == reading
    writing = reading.replace("reading failed", "writing failed")
    assert str(_raises(BucketNotFoundError, _save(url, options))) == writing
    assert str(_raises(BucketNotFoundError, _save(url, options, overwrite=False))) == writing
    archive = f"{scheme}://no-such-bucket/case.mska"
    err = _raises(BucketNotFoundError, lambda: _write_archive(archive, options))
    assert str(err) == f"{archive}: bucket 'no-such-bucket' does not exist (writing failed)."
    return reading


def test_s3_missing_bucket_reads_and_writes(s3: BucketFixture) -> None:
    options = s3.storage_options
    reading = _check_missing_bucket("s3", options)
    url = "s3://no-such-bucket/case.msk"
    info = _raises(BucketNotFoundError, lambda: medmask.read_info(url, storage_options=options))
    assert str(info) == reading
    # a HEAD request's 404 names neither: the bucket is asked for
    err = _raises(BucketNotFoundError, lambda: medmask.io.stored_size(url, options))
    assert str(err) == reading.replace("reading failed", "reading the size of failed")


def test_s3_missing_object(s3: BucketFixture) -> None:
    url = s3.url("absent.msk")
    options = s3.storage_options
    expected = f"{url}: no such object in bucket '{s3.bucket}'."
    err = _raises(MaskFileNotFoundError, _load(url, options))
    assert str(err) == expected
    err = _raises(
        MaskFileNotFoundError,
        lambda: medmask.MaskArchive(s3.url("a.mska"), storage_options=options),
    )
    assert str(err) == f"{s3.url('a.mska')}: no such object in bucket '{s3.bucket}'."
    assert (
        str(_raises(MaskFileNotFoundError, lambda: medmask.io.stored_size(url, options)))
        == expected
    )


def test_s3_missing_bucket_on_the_async_path(s3: BucketFixture) -> None:
    options = s3.storage_options

    async def read_both() -> list[BaseException]:
        errors = []
        for url in ("s3://no-such-bucket/k.msk", s3.url("absent.msk")):
            source = medmask.io.open_source_async(url, options)
            with pytest.raises(MaskFileNotFoundError) as info:
                await source.read(0, 10)
            errors.append(info.value)
            source.close()
        return errors

    bucket, missing = asyncio.run(read_both())
    assert type(bucket) is BucketNotFoundError
    assert (
        str(bucket)
        == "s3://no-such-bucket/k.msk: bucket 'no-such-bucket' does not exist (reading failed)."
    )
    assert type(missing) is MaskFileNotFoundError
    assert str(missing) == f"{s3.url('absent.msk')}: no such object in bucket '{s3.bucket}'."


# --- S3: credentials and permissions (moto IAM authentication) ------------------------------


@dataclass(frozen=True)
class S3Users:
    """Storage options of IAM users on the authenticating moto server."""

    nobody: dict[str, Any]  # valid keys, no policy: every action denied
    reader: dict[str, Any]  # s3:GetObject and s3:ListBucket only
    endpoint_url: str

    def options(self, key: str, secret: str, **more: Any) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "key": key,
            "secret": secret,
            "skip_instance_cache": True,
            **more,
        }


def _moto_auth(endpoint_url: str, unauthenticated_requests: str) -> None:
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth",
        data=unauthenticated_requests.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture
def s3_auth(s3: BucketFixture) -> Iterator[S3Users]:
    """moto with IAM authentication on, ``case.msk`` in the bucket, and two users."""
    import botocore.session

    medmask.save_mask(_mask(), s3.url("case.msk"), storage_options=s3.storage_options)
    iam = botocore.session.get_session().create_client(
        "iam",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = {}
    for user in ("nobody", "reader"):
        iam.create_user(UserName=user)
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
        ],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
    users = S3Users({}, {}, s3.endpoint_url)
    users = S3Users(
        *(users.options(keys[u]["AccessKeyId"], keys[u]["SecretAccessKey"]) for u in keys),
        s3.endpoint_url,
    )
    _moto_auth(s3.endpoint_url, "0")
    try:
        yield users
    finally:
        _moto_auth(s3.endpoint_url, "inf")


def test_s3_denied_reads_and_writes(s3: BucketFixture, s3_auth: S3Users) -> None:
    url = s3.url("case.msk")
    err = _raises(StoragePermissionError, _load(url, s3_auth.nobody))
    assert str(err) == (
        f"{url}: access denied while reading (AccessDenied: Access Denied): the credentials were "
        "accepted but lack permission (S3 also answers so for a missing object when the caller "
        "may not list the bucket)."
    )
    assert medmask.load_mask(url, storage_options=s3_auth.reader).mapping["liver"] == 1
    for overwrite in (True, False):
        err = _raises(
            StoragePermissionError,
            _save(s3.url("new.msk"), s3_auth.reader, overwrite),
        )
        assert str(err) == (
            f"{s3.url('new.msk')}: access denied while writing (AccessDenied: Access Denied): "
            "the credentials were accepted but lack permission."
        )


def test_s3_refused_credentials(s3: BucketFixture, s3_auth: S3Users) -> None:
    url = s3.url("case.msk")
    unknown = s3_auth.options("AKIAUNKNOWNUNKNOWN00", "secret")
    wrong_secret = {**s3_auth.reader, "secret": "not-the-secret"}
    cases = [
        (
            unknown,
            "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.",
        ),
        (
            wrong_secret,
            "SignatureDoesNotMatch: The request signature we calculated does not match the "
            "signature you provided. Check your key and signing method.",
        ),
    ]
    for options, detail in cases:
        err = _raises(StorageCredentialsError, _load(url, options))
        assert str(err) == (
            f"{url}: reading failed: the store refused the credentials ({detail}): they are "
            f"unknown, wrong or expired; {S3_HINT}"
        )
        err = _raises(
            StorageCredentialsError,
            _save(url, options),
        )
        assert str(err).startswith(
            f"{url}: writing failed: the store refused the credentials ({detail})"
        )


def test_s3_anonymous_access_refused(s3: BucketFixture, s3_auth: S3Users) -> None:
    url = s3.url("case.msk")
    options = {"endpoint_url": s3.endpoint_url, "anon": True, "skip_instance_cache": True}
    err = _raises(StorageCredentialsError, _load(url, options))
    assert str(err) == (
        f"{url}: reading failed: the store refused anonymous access (403: Forbidden); {S3_HINT}"
    )


def test_s3_no_credentials_reads_and_writes(
    s3: BucketFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3.url("case.msk")
    medmask.save_mask(_mask(), url, storage_options=s3.storage_options)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    options = {"endpoint_url": s3.endpoint_url, "skip_instance_cache": True}
    s3.log.clear()
    detail = "NoCredentialsError: Unable to locate credentials"
    err = _raises(StorageCredentialsError, _load(url, options))
    assert str(err) == f"{url}: reading failed: no credentials were found ({detail}); {S3_HINT}"
    err = _raises(StorageCredentialsError, _save(url, options))
    assert str(err) == f"{url}: writing failed: no credentials were found ({detail}); {S3_HINT}"
    assert s3.log.requests == []  # refused before anything went out


def test_s3_expired_token() -> None:
    answer = s3_error(400, "ExpiredToken", "The provided token has expired.")
    with canned_store(answer) as endpoint:
        options = {
            "endpoint_url": endpoint,
            "key": "ASIAEXAMPLE",
            "secret": "secret",
            "token": "expired",
            "skip_instance_cache": True,
        }
        url = "s3://bucket/case.msk"
        err = _raises(StorageCredentialsError, _load(url, options))
        assert str(err) == (
            f"{url}: reading failed: the store refused the credentials (ExpiredToken: The "
            f"provided token has expired.): they are unknown, wrong or expired; {S3_HINT}"
        )
        err = _raises(
            StorageCredentialsError,
            _save(url, options),
        )
        assert "writing failed: the store refused the credentials (ExpiredToken" in str(err)
    assert answer.requests == ["GET /bucket/case.msk", "PUT /bucket/case.msk"]


# --- GCS ------------------------------------------------------------------------------------


def test_gcs_missing_bucket_reads_and_writes(gcs: BucketFixture) -> None:
    _check_missing_bucket("gs", gcs.storage_options)


def test_gcs_missing_object(gcs: BucketFixture) -> None:
    url = gcs.url("absent.msk")
    err = _raises(MaskFileNotFoundError, _load(url, gcs.storage_options))
    assert str(err) == f"{url}: no such object in bucket '{gcs.bucket}'."
    err = _raises(
        MaskFileNotFoundError, lambda: medmask.read_info(url, storage_options=gcs.storage_options)
    )
    assert str(err) == f"{url}: no such object in bucket '{gcs.bucket}'."


def _gcs_options(endpoint: str, token: Any) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "token": token,
        "project": "test",
        "skip_instance_cache": True,
    }


def test_gcs_anonymous_access_refused() -> None:
    answer = gcs_error(401, GCS_ANONYMOUS, "required")
    url = "gs://bucket/case.msk"
    with canned_store(answer) as endpoint:
        options = _gcs_options(endpoint, "anon")
        err = _raises(StorageCredentialsError, _load(url, options))
        assert str(err) == (
            f"{url}: reading failed: the store refused anonymous access (HTTP 401: "
            f"{GCS_ANONYMOUS}); {GCS_HINT}"
        )
        err = _raises(
            StorageCredentialsError,
            _save(url, options),
        )
        assert str(err).startswith(f"{url}: writing failed: the store refused anonymous access")
    assert [r.split("?")[0] for r in answer.requests] == [
        "GET /download/storage/v1/b/bucket/o/case.msk",
        "POST /upload/storage/v1/b/bucket/o",
    ]


def test_gcs_refused_credentials() -> None:
    from google.oauth2.credentials import Credentials

    url = "gs://bucket/case.msk"
    with canned_store(gcs_error(401, GCS_BAD_TOKEN, "authError")) as endpoint:
        options = _gcs_options(endpoint, Credentials("ya29.not-a-token"))
        err = _raises(StorageCredentialsError, _load(url, options))
        assert str(err) == (
            f"{url}: reading failed: the store refused the credentials (HTTP 401: "
            f"{GCS_BAD_TOKEN}): they are unknown, wrong or expired; {GCS_HINT}"
        )
        err = _raises(
            StorageCredentialsError,
            _save(url, options),
        )
        assert str(err).startswith(f"{url}: writing failed: the store refused the credentials")


def test_gcs_denied() -> None:
    """gcsfs raises a plain ``OSError("Forbidden: ...")`` for a 403; it is a denial, not a
    generic storage failure."""
    from google.oauth2.credentials import Credentials

    url = "gs://bucket/case.msk"
    with canned_store(gcs_error(403, GCS_DENIED, "forbidden")) as endpoint:
        options = _gcs_options(endpoint, Credentials("ya29.a-valid-token"))
        err = _raises(StoragePermissionError, _load(url, options))
        assert str(err) == (
            f"{url}: access denied while reading (HTTP 403: {GCS_DENIED}): the credentials were "
            "accepted but lack permission."
        )
        err = _raises(StoragePermissionError, _save(url, options))
        assert str(err).startswith(f"{url}: access denied while writing (HTTP 403: ")
