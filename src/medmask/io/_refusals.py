"""What an object store's failure means: a missing bucket, a missing object, no credentials,
refused credentials, or denied access; and the words that tell a user which one and what to do.

Read from what the installed clients really raise, reproduced against the test servers
(s3fs 2026.9 / aiobotocore 3.10 on moto 5.2 with IAM authentication on; gcsfs 2026.10.1 on
fake-gcs-server and on canned GCS error answers):

- s3fs turns a botocore ``ClientError`` into a builtin (``FileNotFoundError``,
  ``PermissionError``...) and chains the ``ClientError`` as its cause, whose
  ``response["Error"]["Code"]`` names the problem (:data:`_S3_CODES`). A HEAD request gets no
  error body: its code is the bare status (``"404"``, ``"403"``). botocore's
  ``NoCredentialsError`` (no keys anywhere) is raised as it is, before any request.
- gcsfs raises ``FileNotFoundError(url)`` for every 404 (bucket or object alike), a plain
  ``OSError("Forbidden: ...")`` for 403, and its ``HttpError`` with ``code`` 401 for refused
  or missing credentials. Which of bucket and object is missing takes one more request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["Problem", "bucket_of", "describe", "problem_of"]

Problem = Literal["bucket", "object", "no-credentials", "bad-credentials", "denied", "forbidden"]

#: S3 error codes (and bare HTTP statuses of HEAD requests) -> what they mean; ``"404"`` is
#: either a bucket or an object, told apart by asking for the bucket.
_S3_CODES: Mapping[str, Problem] = {
    "NoSuchBucket": "bucket",
    "NoSuchKey": "object",
    "AccessDenied": "denied",
    "AllAccessDisabled": "denied",
    "AccountProblem": "denied",
    "403": "forbidden",
    "InvalidAccessKeyId": "bad-credentials",
    "SignatureDoesNotMatch": "bad-credentials",
    "ExpiredToken": "bad-credentials",
    "InvalidToken": "bad-credentials",
    "TokenRefreshRequired": "bad-credentials",
    "RequestTimeTooSkewed": "bad-credentials",
}
#: Exceptions raised before any request because no credentials were found (botocore,
#: google-auth).
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError")
#: Exceptions of credentials that exist but cannot be used (botocore, google-auth).
_BAD_CREDENTIALS = ("CredentialRetrievalError", "RefreshError", "TokenRetrievalError")

_S3_HINT = (
    "pass credentials with storage_options={'key': KEY, 'secret': SECRET} (and 'token' for "
    "temporary ones) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
)
_GCS_HINT = (
    "pass credentials with storage_options={'token': 'service-account.json'} (or 'google_default') "
    "or set GOOGLE_APPLICATION_CREDENTIALS"
)
_OTHER_HINT = "pass credentials with storage_options= (see your filesystem's fsspec options)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _s3_error(exc: BaseException) -> tuple[str, str] | None:
    """``(code, message)`` of the botocore ``ClientError`` in ``exc``'s chain, if any."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        error = response.get("Error") if isinstance(response, Mapping) else None
        if isinstance(error, Mapping) and error.get("Code"):
            return str(error["Code"]), str(error.get("Message") or "")
    return None


def _gcs_forbidden(exc: BaseException) -> bool:
    # gcsfs.retry.validate_response: `raise OSError(f"Forbidden: {path}\n{msg}")` for a 403
    return type(exc) is OSError and str(exc).startswith("Forbidden: ")


def _is_anonymous(fs: Any) -> bool:
    """Whether ``fs`` sends no credentials (s3fs ``anon=True``, gcsfs ``token='anon'`` or
    nothing found)."""
    if fs is None:
        return False
    if getattr(fs, "anon", False) is True:
        return True
    credentials = getattr(fs, "credentials", None)
    return credentials is not None and getattr(credentials, "credentials", "") is None


def protocol_of(fs: Any, name: str) -> str:
    """``"s3"``, ``"gs"``... of a filesystem, else of a URL's scheme; ``""`` if neither."""
    if fs is not None:
        protocol = fs.protocol
        first = protocol[0] if isinstance(protocol, tuple | list) else protocol
        return {"s3a": "s3", "gcs": "gs"}.get(str(first), str(first))
    scheme = name.split("://", 1)[0] if "://" in name else ""
    return {"s3a": "s3", "gcs": "gs"}.get(scheme, scheme)


def bucket_of(name: str, fs: Any = None, path: str | None = None) -> str | None:
    """The bucket of an object path (``fs.split_path``) or of an ``s3://``/``gs://`` URL."""
    split = getattr(fs, "split_path", None)
    if path is not None and split is not None:
        with contextlib.suppress(Exception):
            return str(split(path)[0]) or None
    if "://" in name:
        return name.split("://", 1)[1].split("/", 1)[0] or None
    return None


def _bucket_exists(fs: Any, bucket: str) -> bool | None:
    """Whether ``bucket`` exists on ``fs`` (one or two requests); None when unknown."""
    try:
        fs.invalidate_cache(bucket)
        fs.info(bucket)
    except FileNotFoundError:
        return False
    except Exception:
        return None
    return True


def problem_of(exc: BaseException, fs: Any = None, path: str | None = None) -> Problem | None:
    """What ``exc`` (raised by an object store's client) means; None for anything else.

    A 404 that does not say whether the bucket or the object is missing is resolved by asking
    ``fs`` for the bucket when ``fs`` and ``path`` are given.
    """
    names = {type(e).__name__ for e in _chain(exc)}
    if names & set(_NO_CREDENTIALS):
        return "no-credentials"
    if names & set(_BAD_CREDENTIALS):
        return "bad-credentials"
    s3 = _s3_error(exc)
    code = s3[0] if s3 else getattr(exc, "code", None)
    problem = _S3_CODES.get(str(code)) if s3 else None
    if code == 401 and not s3:
        problem = "bad-credentials"
    elif _gcs_forbidden(exc):  # GCS says 401 for bad credentials: a 403 is a denial
        problem = "denied"
    elif code == 403 and not s3:
        problem = "forbidden"
    if problem in ("forbidden", "denied", "bad-credentials") and _is_anonymous(fs):
        return "no-credentials"
    if problem is not None:
        return problem
    bucket = bucket_of("", fs, path)
    if not isinstance(exc, FileNotFoundError) or bucket is None:
        return None
    exists = _bucket_exists(fs, bucket) if protocol_of(fs, "") in ("s3", "gs") else None
    return None if exists is None else "object" if exists else "bucket"


def _detail(exc: BaseException) -> str:
    s3 = _s3_error(exc)
    if s3 is not None:
        code, message = s3
        return f"{code}: {message}" if message else code
    if _gcs_forbidden(exc):
        reason = str(exc).split("\n", 1)[1].strip() if "\n" in str(exc) else ""
        return f"HTTP 403: {reason}" if reason else "HTTP 403 Forbidden"
    status = getattr(exc, "code", None)
    if isinstance(status, int) and str(exc):
        text = str(exc).removesuffix(f", {status}")  # gcsfs's HttpError appends the status
        return f"HTTP {status}: {text}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _credentials_hint(protocol: str) -> str:
    return _S3_HINT if protocol == "s3" else _GCS_HINT if protocol == "gs" else _OTHER_HINT


def describe(
    problem: Problem, exc: BaseException, name: str, doing: str, fs: Any = None, path: str = ""
) -> str:
    """The message for ``problem`` met while ``doing`` on ``name``."""
    bucket = bucket_of(name, fs, path or None)
    protocol = protocol_of(fs, name)
    detail = _detail(exc)
    if problem == "bucket":
        return f"{name}: bucket {bucket!r} does not exist ({doing} failed)."
    if problem == "object":
        return f"{name}: no such object in bucket {bucket!r}."
    hint = _credentials_hint(protocol)
    if problem == "no-credentials":
        anonymous = _is_anonymous(fs)
        what = "the store refused anonymous access" if anonymous else "no credentials were found"
        return f"{name}: {doing} failed: {what} ({detail}); {hint}."
    if problem == "bad-credentials":
        return (
            f"{name}: {doing} failed: the store refused the credentials ({detail}): they are "
            f"unknown, wrong or expired; {hint}."
        )
    if problem == "forbidden":
        return (
            f"{name}: access denied while {doing} ({detail}); the store gave no reason: the "
            "credentials may lack permission, or be invalid."
        )
    missing_too = (
        " (S3 also answers so for a missing object when the caller may not list the bucket)"
        if protocol == "s3" and doing.startswith("reading")
        else ""
    )
    return (
        f"{name}: access denied while {doing} ({detail}): the credentials were accepted but "
        f"lack permission{missing_too}."
    )
