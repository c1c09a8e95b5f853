"""What ``import medmask`` offers: the seed API, the writers and readers by name, and
``MedmaskError`` with the errors users catch; every other exception lives in ``medmask.errors``
(and stays importable from ``medmask`` as before)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medmask
from medmask import errors

SEED = {
    "LabelMapping",
    "SegmentationMask",
    "MaskFile",
    "MaskArchive",
    "load_mask",
    "save_mask",
    "match_allowed_values",
}
CAUGHT = {
    "MedmaskError",
    "FormatError",
    "AllocationLimitError",
    "MaskFileNotFoundError",
    "MaskFileExistsError",
}


def test_all_lists_the_seed_api_and_the_errors_users_catch() -> None:
    listed = set(medmask.__all__)
    assert listed >= SEED
    assert {n for n in listed if n.endswith("Error")} == CAUGHT
    assert {"RecoveryWarning", "LayeringReport", "MemberArray"} <= listed  # returned or filtered
    assert {"to_dicom_seg", "from_dicom_seg", "to_nifti", "from_nifti"} <= listed
    for name in listed:
        assert getattr(medmask, name) is not None


def test_every_exception_is_importable_from_errors_and_from_medmask() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert getattr(medmask, name) is cls
        assert issubclass(cls, Exception)
    assert medmask.CodecTypeError is errors.CodecTypeError  # was missing before 0.2


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        medmask.NoSuchThing  # noqa: B018


def test_import_medmask_stays_light() -> None:
    code = (
        "import sys, medmask\n"
        "heavy = ['fsspec', 'zarr', 'dask', 'nibabel', 'pydicom', 'highdicom', 'SimpleITK',"
        " 'pandas', 'medmask.io', 'medmask.interop']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
