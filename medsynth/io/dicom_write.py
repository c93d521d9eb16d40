"""A synthetic CT as a DICOM CT Image Storage series (pydicom) that a treatment planning system imports.

One file per slice, int16 HU (Rescale Slope 1, Intercept 0), Image Type DERIVED\\SECONDARY\\AXIAL,
new Series and SOP Instance UIDs, and the geometry of the output grid: Image Position/Orientation
(Patient), Pixel Spacing and Slice Thickness from the affine. Given the header of a DICOM source series,
the sCT joins its Patient, Study and Frame of Reference (so a TPS places it on the MR without
registration) and refers to the MR as highdicom's derived images refer to their source: each slice names
the MR slice it comes from (Source Image Sequence, purpose (121322, DCM) "Source image for image processing
operation") and the MR series (Referenced Series Sequence of the Common Instance Reference module).
Otherwise it starts a new study with a new Frame of Reference. Every series names medsynth as its
Contributing Equipment with purpose (109100, DCM) "Synthesizing Equipment" (the attribute Synthetic Data
(0008,001C) is newer than the dciodvfy that Debian ships, which rejects it). No Derivation Code Sequence:
none of the codes of CID 7203 "Image Derivation" (resampling, reformatting, filters, segmentation, ...)
describes a CT predicted from an MR, and the Derivation Description says it in words.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth import __version__
from medsynth.choices import PATIENT_POSITIONS, SERIES_NUMBER_MAX
from medsynth.errors import UsageError
from medsynth.io.dicom import choose_series, is_dicom_file
from medsynth.io.outputs import atomic_path
from medsynth.io.volume import CT_RANGE, ImageMeta
from medsynth.io.world import RAS_LPS

_PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "OtherPatientIDs",
                 "IssuerOfPatientID")
_STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription",
               "ReferringPhysicianName")
_ORTHOGONAL_TOLERANCE = 1e-4
# The sCT's Series Number is its MR's plus this (MR series 3 -> sCT 1003), so that a planner sees in the
# series list which MR it was made from; from NIfTI/MHA input (no MR series) it is this number itself.
SERIES_NUMBER_OFFSET = 1000


@dataclass(frozen=True)
class DicomIdentity:
    """Who and what the series belongs to.

    ``source``: the header (pydicom Dataset) of a slice of the input series, whose patient, study and
    Frame of Reference the sCT joins; without it, ``patient_id``/``patient_name`` head a new study (an
    empty name stays empty: DICOM's value for an unknown name).
    ``description``: the Series Description (64 characters at most are kept).
    """

    description: str
    patient_id: str
    patient_name: str
    source: object | None = None
    patient_position: str = ""  # HFS, FFS, ...: how the patient lay, by which a planning system places the CT
    source_images: tuple[tuple[str, str, tuple[float, ...]], ...] = ()  # MR (SOP class, SOP instance, position)
    series_number: int = SERIES_NUMBER_OFFSET
    comments: str = ""  # Image Comments: the case's QA line (input check, predicted error), empty when none


def write_ct_series(folder: Path, hu: np.ndarray, meta: ImageMeta, identity: DicomIdentity) -> Path:
    """Write ``hu`` (x, y[, z] on the grid of ``meta``) as ``folder/CT0001.dcm``, ... atomically.

    The series is written into a hidden folder beside ``folder`` and renamed onto it; an existing
    ``folder`` is replaced only once the new series is complete. Raises :class:`UsageError` for a grid
    DICOM cannot hold (sheared voxel axes) and :class:`InputError` when the place cannot be written.
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    values = np.asarray(hu)
    values = values[..., None] if values.ndim == 2 else values
    stored = np.clip(np.rint(values), *CT_RANGE).astype(np.int16)
    lps = RAS_LPS[:3, :3] @ np.asarray(meta.affine, dtype=np.float64)[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    axes = lps[:, :3] / spacing
    if not np.allclose(axes.T @ axes, np.eye(3), atol=_ORTHOGONAL_TOLERANCE):
        raise UsageError(f"{folder}: the output grid has sheared voxel axes, which a DICOM series cannot hold; "
                         "use --format nifti or mha.")
    series_uid, now = generate_uid(), datetime.datetime.now()
    common = _common_header(identity, series_uid, now, axes, spacing)
    normal = np.cross(axes[:, 0], axes[:, 1])
    with atomic_path(folder, folder=True) as partial:  # an old series there goes only once the new one is in
        for k in range(stored.shape[2]):
            position = lps[:, 3] + k * lps[:, 2]
            ds = _slice(common, stored[:, :, k], position, normal, k)
            if identity.source_images:
                _refer_to_source(ds, str(identity.source.get("SeriesInstanceUID", "")),
                                 *_nearest_source(identity, position, normal))
            ds.save_as(partial / f"CT{k + 1:04d}.dcm", enforce_file_format=True)
    return folder


def _common_header(identity: DicomIdentity, series_uid: str, now: datetime.datetime, axes: np.ndarray,
                   spacing: np.ndarray):
    from pydicom.dataset import Dataset
    from pydicom.uid import CTImageStorage, generate_uid

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    source = identity.source
    if source is not None:
        for key in (*_PATIENT_KEYS, *_STUDY_KEYS):
            if key in source:
                setattr(ds, key, source[key].value)
        ds.FrameOfReferenceUID = source.FrameOfReferenceUID
        ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    else:
        ds.PatientName, ds.PatientID = identity.patient_name, identity.patient_id
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = generate_uid(), date, time
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = generate_uid(), ""
    ds.PatientPosition = identity.patient_position
    # Type 2: present, and empty when unknown (an MR without a Patient's Name lends none)
    for key, empty in (("PatientName", ""), ("PatientID", ""), ("PatientBirthDate", ""), ("PatientSex", ""),
                       ("StudyID", "1"), ("AccessionNumber", ""), ("ReferringPhysicianName", ""),
                       ("StudyDate", date), ("StudyTime", time), ("PatientPosition", ""), ("Laterality", "")):
        if key not in ds:
            setattr(ds, key, empty)
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", series_uid, identity.series_number
    ds.SeriesDate, ds.SeriesTime, ds.ContentDate, ds.ContentTime = date, time, date, time
    ds.SeriesDescription = identity.description[:64]
    ds.DerivationDescription = (f"Synthetic CT computed by medsynth {__version__}; not acquired. "
                                f"{identity.description}")[:1024]
    ds.Manufacturer, ds.SoftwareVersions = "medsynth", __version__
    if identity.comments:
        ds.ImageComments = identity.comments[:10240]  # LT
    ds.ContributingEquipmentSequence = [_synthesizing_equipment(date, time)]
    ds.ImageOrientationPatient = [_ds(v) for v in (*axes[:, 0], *axes[:, 1])]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows (along y), between columns (along x)
    ds.SliceThickness = _ds(spacing[2])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.KVP, ds.AcquisitionNumber, ds.BurnedInAnnotation = "", "", "NO"
    return ds


def _code(code):
    """A pydicom ``Code`` (``pydicom.sr.codedict.codes``) as a Code Sequence item."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _synthesizing_equipment(date: str, time: str):
    """The Contributing Equipment item naming medsynth as the equipment that synthesised the image."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [_code(codes.DCM.SynthesizingEquipment)]
    item.Manufacturer, item.SoftwareVersions = "medsynth", __version__
    item.ContributionDateTime = date + time
    item.ContributionDescription = "Synthetic CT predicted from MR by a trained network"
    return item


def _refer_to_source(ds, series_uid: str, sop_class: str, instance: str) -> None:
    """Name the MR image a sCT slice was derived from, twice as DICOM wants it: in the Source Image Sequence
    (with its purpose) and, under its series (when the MR names it), in the Referenced Series Sequence that
    lists every instance this one refers to (Common Instance Reference module)."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    image = Dataset()
    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = sop_class, instance
    image.PurposeOfReferenceCodeSequence = [_code(codes.DCM.SourceImageForImageProcessingOperation)]
    ds.SourceImageSequence = [image]
    if not series_uid:
        return
    instance_item, series = Dataset(), Dataset()
    instance_item.ReferencedSOPClassUID, instance_item.ReferencedSOPInstanceUID = sop_class, instance
    series.SeriesInstanceUID, series.ReferencedInstanceSequence = series_uid, [instance_item]
    ds.ReferencedSeriesSequence = [series]


def _nearest_source(identity: DicomIdentity, position: np.ndarray, normal: np.ndarray) -> tuple[str, str]:
    """The MR image (SOP class, instance) nearest to a sCT slice along the normal, which it is derived from."""
    offsets = [abs(float((np.asarray(p) - position) @ normal)) for _, _, p in identity.source_images]
    sop_class, instance, _ = identity.source_images[int(np.argmin(offsets))]
    return sop_class, instance


def _slice(common, pixels: np.ndarray, position: np.ndarray, normal: np.ndarray, index: int):
    """One slice: a copy of the common header with its position, number, UID and pixels (rows along y)."""
    import copy

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = copy.deepcopy(common)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(float(position @ normal))
    ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[0])
    ds.PixelData = np.ascontiguousarray(pixels.T).astype("<i2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _ds(value: float):
    """A Decimal String holding ``value`` as precisely as its 16 characters allow."""
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def read_series_stamp(folder: Path) -> str | None:
    """The Derivation Description of a series :func:`write_ct_series` wrote (it names the model), else None."""
    import pydicom

    for file in sorted(Path(folder).glob("*.dcm"))[:1]:
        try:
            return str(pydicom.dcmread(file, stop_before_pixels=True).get("DerivationDescription", "")) or None
        except (OSError, pydicom.errors.InvalidDicomError):
            return None
    return None


def identity_for(source: Path | None, series: tuple[str, ...], description: str, patient_id: str,
                 patient_name: str, patient_position: str | None = None,
                 series_number: int | None = None, case: str = "") -> DicomIdentity:
    """The identity of a sCT made from ``source``: a DICOM series folder (or file) lends its header, whose
    patient, study and Frame of Reference the sCT joins; any other input gets ``patient_id``/``patient_name``
    in a new study (``case`` as the Patient ID when none is given). ``patient_id``/``patient_name`` are what the
    user gave (``--patient-id``/``--patient-name``, empty when not given); with a DICOM source they must be the
    MR's own, else a :class:`UsageError` (the sCT joins the MR's patient: silently keeping the MR's, or writing
    another, would mislead). The Patient Position is the
    source's, or ``patient_position``; a sCT without one, or with
    one that contradicts the MR's, is a :class:`UsageError`: a planning system places the CT by it. The
    Series Number is ``series_number``, else the MR's plus :data:`SERIES_NUMBER_OFFSET` (the offset alone
    without an MR series number), capped at :data:`SERIES_NUMBER_MAX`."""
    import pydicom

    header, headers = None, ()
    if source is not None and Path(source).is_dir():
        headers = choose_series(Path(source), series).headers
        header = headers[0]
    elif source is not None and is_dicom_file(Path(source)):
        header = pydicom.dcmread(source, stop_before_pixels=True)
        headers = (header,)
    if header is not None and not ("StudyInstanceUID" in header and "FrameOfReferenceUID" in header):
        header = None  # without them the sCT could not be placed on the input anyway: a new study
    images = tuple((str(h.SOPClassUID), str(h.SOPInstanceUID), tuple(float(v) for v in h.ImagePositionPatient))
                   for h in headers if header is not None and "SOPInstanceUID" in h and "ImagePositionPatient" in h)
    if header is not None:
        _same_patient(header, (patient_id, patient_name), source)
    if series_number is None:
        found = header.get("SeriesNumber") if header is not None else None
        series_number = min((int(found) if found not in (None, "") else 0) + SERIES_NUMBER_OFFSET, SERIES_NUMBER_MAX)
    return DicomIdentity(description, patient_id or case, patient_name, header,
                         _patient_position(header, patient_position, source), images, series_number)


def _same_patient(header, given: tuple[str, str], source: Path | None) -> None:
    """Refuse a given Patient ID or Name that differs from the DICOM MR's (the sCT joins the MR's patient)."""
    for (key, option), value in zip((("PatientID", "--patient-id"), ("PatientName", "--patient-name")), given,
                                    strict=True):
        found = str(header.get(key, "") or "")
        if value and _comparable(value, key) != _comparable(found, key):
            raise UsageError(f"{source}: the MR says {key} '{found}', {option} says '{value}'; a sCT from a DICOM MR "
                             f"joins the MR's patient and study (drop {option}).")


def _comparable(value: str, key: str) -> str:
    """A Patient ID or Name as DICOM compares it: padding spaces, and a name's empty trailing components
    (``Doe^John^^``), do not count."""
    value = value.strip()
    return value.rstrip("^ ") if key == "PatientName" else value


def _patient_position(header, given: str | None, source: Path | None) -> str:
    found = str(header.get("PatientPosition", "") or "").strip().upper() if header is not None else ""
    given = (given or "").strip().upper()
    if given and given not in PATIENT_POSITIONS:
        raise UsageError(f"--patient-position {given}: not a DICOM Patient Position; use one of "
                         f"{', '.join(PATIENT_POSITIONS)}.")
    if found and given and found != given:
        raise UsageError(f"{source}: the MR says Patient Position {found}, --patient-position says {given}; "
                         "the sCT must lie as the MR does (drop --patient-position).")
    if not (found or given):
        raise UsageError(f"{source}: a DICOM sCT needs a Patient Position (a planning system places the CT by it), "
                         "and this input has none; give --patient-position (e.g. HFS, head first supine).")
    return found or given
