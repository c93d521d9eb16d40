"""Clinical I/O figures: DICOM exports read from their slice positions, and the DICOM sCT a TPS imports.

Part 1 writes with pydicom the broken exports of docs/clinical-io.md (48 axial slices of 48×48, 2 mm) and
reads each with medsynth: the largest distance of any DICOM slice centre from the volume slice holding its
pixels, or the one-line refusal. Part 2 trains a small pix2pix on a SynthRAD-style phantom tree, translates
one DICOM MR case and one NIfTI case to DICOM and to NIfTI, and compares the two (dciodvfy, HU, geometry).

    python benchmarks/clinical_io.py --work /tmp/clinical-io --steps 30
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from _common import print_header

from medsynth.errors import InputError
from medsynth.io import read_image

SIZE, SLICES, GAP = 48, 48, 2.0
LPS = np.diag([-1.0, -1.0, 1.0])


def write_series(folder: Path, offsets: list[float], uid: str, description: str, shift_mm: float = 0.0,
                 study: tuple[str, str] = ("1.2.3", "1.2.4")) -> None:
    """Axial MR slices at ``offsets`` mm along the normal; ``shift_mm`` per slice in x mimics a gantry tilt."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for k, offset in enumerate(offsets):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Modality, ds.PatientID, ds.PatientName = "MR", "P1", "Bench^Mark"
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.InstanceNumber = uid, description, k + 1
        ds.ImagePositionPatient = [-60.0 + shift_mm * k, -80.0, -40.0 + offset]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [1.0, 1.0], GAP, SIZE, SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (((yy - 24) ** 2 + (xx - 22) ** 2 < 324) * (200 + 10 * k) + xx).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{description}_{k:03d}_{offset:g}.dcm", enforce_file_format=True)


def worst_slice_error(folder: Path, series: tuple[str, ...] = ()) -> tuple[tuple[int, ...], float]:
    """Shape read and the largest distance (mm) of a DICOM slice centre from the volume slice with its pixels."""
    volume = read_image(folder, series=series)
    inverse = np.linalg.inv(volume.meta.affine)
    worst = 0.0
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        if series and ds.SeriesInstanceUID not in series:
            continue
        centre = LPS @ (np.asarray(ds.ImagePositionPatient, float) + np.array([(SIZE - 1) / 2, (SIZE - 1) / 2, 0.0]))
        k = (inverse @ [*centre, 1.0])[2]
        same = [z for z in range(volume.array.shape[2]) if np.array_equal(volume.array[:, :, z], ds.pixel_array.T)]
        worst = max(worst, min(abs(k - z) for z in same) * volume.meta.spacing[2] if same else np.inf)
    return volume.array.shape, worst


def part_dicom_input(work: Path) -> None:
    print("\n## DICOM exports (48 slices of 48x48, 2 mm)")
    print("| export | medsynth | worst slice-centre distance |")
    print("|---|---|---|")
    regular = [GAP * k for k in range(SLICES)]
    cases = {
        "regular": dict(offsets=regular),
        "one file deleted": dict(offsets=[o for k, o in enumerate(regular) if k != 30]),
        "2 mm then 4 mm": dict(offsets=[GAP * k for k in range(24)] + [46.0 + 4.0 * k for k in range(1, 25)]),
        "gantry tilt 0.5 mm/slice": dict(offsets=regular, shift_mm=0.5),
    }
    for name, spec in cases.items():
        folder = work / "dicom" / name.replace(" ", "_")
        write_series(folder, spec["offsets"], "1.2.9", "T1", spec.get("shift_mm", 0.0))
        _report(name, folder)
    folder = work / "dicom" / "two_series"
    write_series(folder, regular, "1.2.9.1", "T1")
    write_series(folder, regular[:40], "1.2.9.2", "T2")
    _report("two series (T1, T2) in one folder", folder)
    _report("the same, --series 1.2.9.2", folder, ("1.2.9.2",))
    folder = work / "dicom" / "two_per_position"
    write_series(folder, regular, "1.2.9.3", "echo1")
    write_series(folder, regular, "1.2.9.3", "echo2")
    _report("two images per position, one Series UID", folder)


def _report(name: str, folder: Path, series: tuple[str, ...] = ()) -> None:
    try:
        shape, worst = worst_slice_error(folder, series)
        print(f"| {name} | read as {shape} | {worst:.3f} mm |")
    except InputError as error:
        print(f"| {name} | refused: `{str(error).replace(str(folder) + '/', '')[:150]}…` | — |")


def medsynth(*args: object) -> None:
    command = [sys.executable, "-m", "medsynth", *(str(a) for a in args)]
    subprocess.run(command, check=True, capture_output=True, text=True)


def part_dicom_output(work: Path, steps: int) -> None:
    print(f"\n## DICOM sCT against the NIfTI sCT (pix2pix, {steps} steps on a SynthRAD-style phantom)")
    task = work / "Task1"
    medsynth("phantom", "synthrad", task, "--cases", 4, "--shape", 48, 56, 48, "--spacing", 4)
    config = work / "small.yaml"
    config.write_text("model:\n  channels: [16, 32, 64]\n  disc_layers: 2\n")
    medsynth("train", "pix2pix", task, "--out", work / "run", "--steps", steps, "--patch-size", 32, "--config", config,
             "--device", "cpu")
    mr = read_image(task / "case_003" / "mr.mha")
    dicom_in = work / "dicom_mr" / "case_003"
    for k in range(mr.array.shape[2]):  # the phantom MR as a DICOM series, positions from its affine
        write_slice(dicom_in, mr, k)
    print("| input | dciodvfy errors | max abs HU difference (pydicom / SimpleITK) | max position difference |")
    print("|---|---|---|---|")
    for label, source in (("NIfTI/MHA case folder", task / "case_002"), ("DICOM MR series", dicom_in)):
        for fmt in ("dicom", "nifti"):
            medsynth("translate", work / "run", source, work / f"out_{fmt}", "--format", fmt, "--device", "cpu")
        case = source.name
        series, nifti = work / "out_dicom" / case, nib.load(work / "out_nifti" / f"{case}.nii.gz")
        errors = sum(line.startswith("Error") for file in series.iterdir() for line in _dciodvfy(file)) \
            if shutil.which("dciodvfy") else "n/a"
        slices = sorted((pydicom.dcmread(f) for f in series.iterdir()), key=lambda d: int(d.InstanceNumber))
        hu = np.asarray(nifti.dataobj)
        by_pydicom = np.stack([d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices], -1)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
        by_itk = sitk.GetArrayFromImage(reader.Execute()).transpose(2, 1, 0)
        positions = max(np.abs(np.asarray(d.ImagePositionPatient, float) - LPS @ (nifti.affine @ [0, 0, k, 1])[:3])
                        .max() for k, d in enumerate(slices))
        print(f"| {label} | {errors} | {np.abs(by_pydicom - hu).max():.0f} / {np.abs(by_itk - hu).max():.0f} HU "
              f"| {positions:.2g} mm |")


def _dciodvfy(file: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(file)], capture_output=True, text=True)
    return (done.stdout + done.stderr).splitlines()


def write_slice(folder: Path, volume, k: int) -> None:
    """Slice ``k`` of a volume (RAS affine) as an MR DICOM file with its true position."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    axes = LPS @ volume.meta.affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.PatientID, ds.PatientName = "MR", "P3", "Phantom^Three"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.3", "1.2.3.3.1", "1.2.3.3.2"
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [float(v) for v in LPS @ (volume.meta.affine @ [0, 0, k, 1])[:3]]
    ds.ImageOrientationPatient = [float(v) for v in (*(axes[:, 0] / spacing[0]), *(axes[:, 1] / spacing[1]))]
    ds.PixelSpacing, ds.SliceThickness = [float(spacing[1]), float(spacing[0])], float(spacing[2])
    ds.Rows, ds.Columns = volume.array.shape[1], volume.array.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(np.clip(np.rint(volume.array[:, :, k]), 0, 65535).astype(np.uint16).T).tobytes()
    ds.save_as(folder / f"MR{k:04d}.dcm", enforce_file_format=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/clinical-io"))
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print_header("clinical I/O: DICOM input geometry and the DICOM sCT")
    shutil.rmtree(args.work, ignore_errors=True)
    part_dicom_input(args.work)
    part_dicom_output(args.work, args.steps)


if __name__ == "__main__":
    main()
