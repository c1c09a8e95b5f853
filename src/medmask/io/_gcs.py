"""The one place that uses gcsfs internals: a PUT conditional on an object's generation.

gcsfs has no public conditional-write API (``pipe_file`` forwards no ``ifGenerationMatch``, and
its own use of one is limited to ``0``, "only if absent"), so the multipart upload is built
here and sent through gcsfs's private request machinery:

- ``fs._location``: the JSON API endpoint (the emulator's when ``STORAGE_EMULATOR_HOST`` is set);
- ``fs._call``: gcsfs's authenticated request coroutine (retries, error translation);
- ``fsspec.asyn.sync(fs.loop, ...)``: runs that coroutine on the filesystem's event loop.

Checked against gcsfs 2026.10.1 (with fsspec 2026.9.0), exercised by ``tests/test_io.py``
against fake-gcs-server. If a gcsfs release renames these, only this module changes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

__all__ = ["gcs_put"]


def gcs_put(fs: Any, path: str, data: bytes, generation: str) -> dict[str, Any]:
    """Upload ``data`` to ``path`` with ``ifGenerationMatch=generation`` (``"0"``: only if
    absent) in one multipart request; gcsfs's JSON answer (with the new ``generation``)."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    url = f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o"
    body = b"".join(
        (
            b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n",
            json.dumps({"name": key}).encode(),
            b"\n--==0==\nContent-Type: application/octet-stream\n\n",
            data,
            b"\n--==0==--",
        )
    )
    out: dict[str, Any] = sync(
        fs.loop,
        fs._call,
        "POST",
        url,
        uploadType="multipart",
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
        data=body,
        json_out=True,
        ifGenerationMatch=generation,
    )
    fs.invalidate_cache(path)
    return out
