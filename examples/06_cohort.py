"""A cohort on object storage: organ volumes of every case, and a model scored against the
references, per structure, on a 2-process Dask cluster.

Generates 50 deterministic synthetic cases (references and a model's predictions with known
errors: shifts, a missed kidney, an empty spleen, an extra gallbladder), uploads them to a
local S3 server (moto on 127.0.0.1), runs ``medmask.dask.cohort_stats`` and
``medmask.dask.compare`` on a ``LocalCluster`` and writes a plot. Needs the ``dask``, ``s3``
and ``test`` extras (moto) and matplotlib.

    python examples/06_cohort.py [--out cohort.png]
"""

import argparse
import io
import logging
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import s3fs
from distributed import Client, LocalCluster
from moto.server import ThreadedMotoServer

import medmask
from medmask.dask import cohort_stats, compare
from medmask.synthetic import synthetic_case, synthetic_prediction, synthetic_space

N_CASES = 50


def archive_bytes(structures: dict, space: object) -> bytes:
    buf = io.BytesIO()
    with medmask.MaskArchive(buf, "w", space=space) as archive:
        archive.add_structures(structures)  # overlapping tumor and liver: lossless layers
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cohort.png")
    out = parser.parse_args().out
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("distributed").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    try:
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("cohort")
        for seed in range(N_CASES):
            space = synthetic_space(seed=seed)
            reference = synthetic_case(seed)
            prediction = synthetic_prediction(reference, seed)
            fs.pipe(f"cohort/refs/case{seed:03d}.mska", archive_bytes(reference, space))
            fs.pipe(f"cohort/preds/case{seed:03d}.mska", archive_bytes(prediction, space))
        print(f"Uploaded {N_CASES} references and {N_CASES} predictions to s3://cohort/")

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            stats = cohort_stats("s3://cohort/refs/*.mska", storage_options=options, client=client)
            scores = compare(
                "s3://cohort/preds/*.mska",
                "s3://cohort/refs/*.mska",
                storage_options=options,
                client=client,
            )
    finally:
        server.stop()

    pd.set_option("display.width", 120)
    volumes = stats.groupby("structure")["volume_ml"].describe()[["count", "mean", "min", "max"]]
    print("\nReference volumes (ml), from stored statistics, no decoding:")
    print(volumes.round(2).to_string())
    dice = scores.groupby("structure")["dice"].agg(["count", "mean", "min", "max"])
    print("\nDice per structure (prediction vs reference):")
    print(dice.round(3).to_string())
    print(f"\nRows: {len(stats)} statistics, {len(scores)} comparisons")
    print("Missed kidney_right cases (Dice 0):",
          int(((scores.structure == "kidney_right") & (scores.dice == 0)).sum()))  # fmt: skip

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = sorted(stats.structure.unique())
    left.boxplot([stats[stats.structure == n].volume_ml for n in names], tick_labels=names)
    left.set_ylabel("volume (ml)")
    left.set_title(f"Reference volumes, {N_CASES} cases")
    left.tick_params(axis="x", rotation=45)
    scored = sorted(scores.structure.unique())
    right.boxplot([scores[scores.structure == n].dice.dropna() for n in scored], tick_labels=scored)
    right.set_ylabel("Dice")
    right.set_title("Prediction vs reference")
    right.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"Plot written to {out}")


if __name__ == "__main__":
    main()
