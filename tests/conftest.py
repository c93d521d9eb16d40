"""Shared test helpers: images written *without* medsynth (nibabel, SimpleITK, pydicom), oblique geometry,
and a tiny paired MR/CT phantom.

The helpers are exposed as session fixtures that return plain functions, so modules and module-scoped
fixtures can call them freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per test process. The suite runs one process per core (``pytest -n auto``);
    torch's default of one thread per core on top oversubscribes the cores, and spinning OpenMP threads
    then made the same suite take 7.5 to 12.5 minutes in CI instead of about 3. Child processes (CLI,
    torchrun) inherit the variable; the user's own setting wins."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def make_oblique_affine(spacing: Sequence[float] = (0.9, 1.1, 3.0), angles: Sequence[float] = (15.0, -10.0, 12.0),
                        origin: Sequence[float] = (-40.5, 22.0, 17.25), lps: bool = False) -> np.ndarray:
    """Voxel -> RAS+ mm: a rotation by ``angles`` (degrees about x, y, z) of axes scaled by ``spacing``.

    With ``lps`` the first two voxel axes run towards L and P, so ``nib.aff2axcodes`` gives LPS for
    moderate angles. The determinant stays positive either way (DICOM slice stacks need that).
    """
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    signs = np.array([-1.0, -1.0, 1.0]) if lps else np.ones(3)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(signs * np.asarray(spacing, dtype=float))
    affine[:3, 3] = origin
    return affine


def voxel_world(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World (RAS mm) coordinates of every voxel, shape ``(*shape, 3)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _write_volume(path: str | Path, array: np.ndarray, affine: np.ndarray, qform_code: int = 1,
                  sform_code: int = 1, qform: np.ndarray | None = None) -> Path:
    """Write ``array`` (x, y, z voxel order) on the RAS grid ``affine``, independently of medsynth.

    ``.nii``/``.nii.gz``: nibabel, with the given codes (``qform`` may differ from the sform matrix);
    ``.mha``/``.nrrd``: SimpleITK, converted to ITK's LPS world and (z, y, x) array order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        image = nib.Nifti1Image(np.asarray(array), None)  # no affine: nibabel must not invent an sform
        image.header.set_qform(affine if qform is None else qform, code=qform_code)
        image.header.set_sform(affine, code=sform_code)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, str(path))
        return path
    import SimpleITK as sitk

    array = np.asarray(array)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(tuple(range(array.ndim - 1, -1, -1)))))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (LPS @ affine[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in LPS @ affine[:3, 3]])
    sitk.WriteImage(image, str(path))
    return path


def _write_dicom_series(folder: str | Path, hu: np.ndarray, affine: np.ndarray, slope: float = 2.0,
                        intercept: float = -1024.0, suffix: str = "") -> Path:
    """A CT series built from scratch with pydicom, one file per z slice (Part-10, DICM preamble).

    Stored values are ``(hu - intercept) / slope`` as uint16; rows run along voxel axis y and columns
    along x, as DICOM requires. ``affine`` must have orthogonal axes and a positive determinant.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    axes = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    row_cosine, column_cosine = axes[:, 0] / spacing[0], axes[:, 1] / spacing[1]
    stored = np.rint((np.asarray(hu, dtype=float) - intercept) / slope)
    assert stored.min() >= 0 and stored.max() < 2**16, "HU outside what this slope/intercept can store"
    stored = stored.astype(np.uint16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(hu.shape[2]):
        instance = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = instance
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, instance, "CT"
        ds.PatientID, ds.PatientName = "PHANTOM", "Test^Phantom"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [float(v) for v in LPS @ (affine @ [0.0, 0.0, k, 1.0])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row_cosine, *column_cosine)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (along y), column spacing (x)
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (rows, columns) = (y, x)
        ds.save_as(folder / f"IM{k:04d}{suffix}", enforce_file_format=True)
    return folder


def _write_paired_phantom(root: str | Path, cases: int = 3, shape: tuple[int, int, int] = (24, 28, 24),
                          spacing: float = 6.0, seed: int = 0) -> Path:
    """``root/mr/case_i.nii.gz`` and ``root/ct/case_i.nii.gz`` from the digital head (medsynth's writers)."""
    from medsynth.io import ImageMeta, write_ct, write_image
    from medsynth.phantom.anatomy import make_head

    root = Path(root)
    for index in range(cases):
        head = make_head((seed, index), shape, spacing)
        meta = ImageMeta.from_affine(head.affine, head.mr.shape)
        write_image(root / "mr" / f"case_{index}.nii.gz", head.mr, meta)
        write_ct(root / "ct" / f"case_{index}.nii.gz", head.ct, meta)
    return root


@pytest.fixture(scope="session")
def oblique_affine() -> Callable[..., np.ndarray]:
    """``oblique_affine(spacing=(0.9, 1.1, 3.0), angles=(15, -10, 12), origin=..., lps=False)``."""
    return make_oblique_affine


@pytest.fixture(scope="session")
def write_volume() -> Callable[..., Path]:
    """``write_volume(path, array, affine, qform_code=1, sform_code=1, qform=None)`` (NIfTI, MHA, NRRD)."""
    return _write_volume


@pytest.fixture(scope="session")
def write_dicom_series() -> Callable[..., Path]:
    """``write_dicom_series(folder, hu, affine, slope=2.0, intercept=-1024.0)``: a pydicom CT series."""
    return _write_dicom_series


@pytest.fixture(scope="session")
def paired_phantom() -> Callable[..., Path]:
    """``paired_phantom(root, cases=3, shape=(24, 28, 24), spacing=6.0)``: DATA/mr and DATA/ct of tiny heads."""
    return _write_paired_phantom


@pytest.fixture(scope="session")
def world_coordinates() -> Callable[..., np.ndarray]:
    """``world_coordinates(shape, affine)``: RAS mm of every voxel, shape ``(*shape, 3)``."""
    return voxel_world
