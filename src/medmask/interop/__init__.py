"""Converters between medmask and other formats, and the registry that picks one by name.

- :mod:`~medmask.interop.registry`: the kinds of file medmask reads and writes by name
  (``.msk``, ``.mska``, NIfTI, DICOM SEG), their readers and writers, and :func:`kind_of`;
  used by :func:`medmask.load_mask` / :func:`medmask.save_mask` and the command line.
- :mod:`~medmask.interop.nifti` (``nifti`` extra), :mod:`~medmask.interop.dicom` (DICOM series
  geometry and DICOM SEG; ``dicom`` extra), :mod:`~medmask.interop.sitk` (SimpleITK images;
  ``sitk`` extra): one module per format.
- :mod:`~medmask.interop.labels`: label tables (JSON, TSV/CSV, ITK-SNAP, 3D Slicer).
- :mod:`~medmask.interop.folders`: folders of per-structure NIfTI files <-> one ``.mska``.

Nothing below :mod:`medmask.files` imports this package; each converter and its optional
dependencies load only when used.
"""
