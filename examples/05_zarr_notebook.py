"""A notebook-style session: an archive on object storage, opened with zarr and summed by dask.

Starts a local S3 server (moto, on 127.0.0.1; installed with the ``test`` extra), uploads a
generated case, then reads it the way one reads any cloud array: ``zarr.open_group`` on a
``medmask.ArchiveStore`` and ``dask.array.from_zarr``. Needs the ``zarr``, ``dask``, ``s3``
extras.
"""

import logging
import os

import dask.array as da
import numpy as np
import s3fs
import zarr
from moto.server import ThreadedMotoServer
from spacetransformer import Space

import medmask

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's access log

# a case: a body outline, a liver inside it, and a lesion that overlaps the liver
shape = (60, 128, 128)
space = Space(shape=shape, origin=(-300.0, -150.0, 80.0), spacing=(2.5, 0.8, 0.8))
z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
body = ((y - 64) / 60.0) ** 2 + ((x - 64) / 58.0) ** 2 <= 1
body = np.broadcast_to(body, shape)
liver = ((z - 30) / 14.0) ** 2 + ((y - 70) / 22.0) ** 2 + ((x - 45) / 25.0) ** 2 <= 1
lesion = ((z - 32) / 3.0) ** 2 + ((y - 66) / 4.0) ** 2 + ((x - 52) / 4.0) ** 2 <= 1

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
try:
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("cases")
    url = "s3://cases/patient-001.mska"
    with medmask.MaskArchive(url, "w", space=space, storage_options=options) as archive:
        report = archive.add_structures({"body": body, "liver": liver, "lesion": lesion})
    print(f"Uploaded {url}: {fs.size(url):,} bytes, {report.n_layers} layers (lesion overlaps)")

    group = zarr.open_group(medmask.ArchiveStore(url, storage_options=options), mode="r")
    print("Members:", sorted(group.attrs["medmask"]["members"]))
    print("Structures:", sorted(group["structures"].attrs["structures"]))

    structure = group["structures/liver"]
    print(f"structures/liver: {structure.shape} {structure.dtype}, chunks {structure.chunks}")
    spacing = structure.attrs["space"]["spacing"]
    voxels = int(da.from_zarr(structure).sum().compute())
    print(f"Liver voxels (dask): {voxels}")
    print(f"Liver volume: {voxels * float(np.prod(spacing)) / 1000:.1f} ml")
    print("Same as stored statistics:", voxels == structure.attrs["label_stats"]["liver"]["count"])
    overlap = int((da.from_zarr(structure) & da.from_zarr(group["structures/lesion"])).sum())
    print(f"Lesion voxels inside the liver: {overlap}")
finally:
    server.stop()
