"""The options of ``translate``, ``attribute`` and ``generate``, checked when they are made.

They import neither torch nor numpy, so that the CLI refuses a wrong option at once, before the service
(and torch) loads; each service module re-exports its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medsynth.choices import (
    PATIENT_POSITIONS,
    SERIES_NUMBER_MAX,
    DeviceChoice,
    Direction,
    Engine,
    OutputFormat,
    parse_device,
)
from medsynth.errors import UsageError


def checked_device(text: str) -> str:
    """``text`` as :func:`~medsynth.choices.parse_device` reads it; a :class:`UsageError` otherwise."""
    try:
        return parse_device(text)
    except ValueError as error:
        raise UsageError(f"--device: {error}.") from error


def _choice(kind, value, option: str):
    """``value`` as a member of the enum ``kind``; a :class:`UsageError` naming ``option`` otherwise."""
    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"{option} {value}: use one of {', '.join(m.value for m in kind)}.") from None


@dataclass(kw_only=True)
class VolumeOptions:
    """What ``translate`` and ``attribute`` share: sliding windows, device, masks, DICOM series and the output
    format (each command checks which formats it writes)."""

    overlap: float = 0.25  # of neighbouring sliding windows, a fraction in [0, 1)
    overwrite: bool = False
    device: str = DeviceChoice.AUTO  # auto, cpu, cuda, cuda:N or mps (choices.parse_device)
    amp: bool = True
    cpu_bf16: bool = False  # bf16 autocast on the CPU (never chosen silently: the outputs move by a few HU)
    sw_batch_size: int = 4  # windows per network call
    mask: Path | None = None  # folder of body masks by case id: the region that sets the intensity scale
    format: str = OutputFormat.NIFTI  # an output-format name of io/formats.py (nifti, mha, dicom or a registered one)
    series: tuple[str, ...] = ()  # Series Instance UIDs choosing among several series in a DICOM folder

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError("--overlap is a fraction in [0, 1).")
        if self.sw_batch_size < 1:
            raise UsageError(f"--sw-batch-size {self.sw_batch_size}: at least 1 window per network call.")
        self.device = checked_device(self.device)
        self.format = str(self.format)


@dataclass(kw_only=True)
class TranslateOptions(VolumeOptions):
    """``translate``'s options; ``format`` dicom writes a CT series folder per case (mr2ct only)."""

    direction: Direction = Direction.MR2CT
    tta: bool = False
    uncertainty: int = 0  # K stochastic passes; writes <case>_std.nii.gz
    error_threshold: float = 100.0  # HU: the QA line's share of the body whose expected error exceeds it
    shard: str | None = None  # "i/N"
    workers: int = 1  # cases read and preprocessed ahead, in parallel threads
    engine: Engine = Engine.TORCH
    patient_id: str | None = None  # DICOM output from NIfTI/MHA input; default: the case id
    patient_name: str | None = None  # DICOM output from NIfTI/MHA input; default: empty (never the file name)
    patient_position: str | None = None  # DICOM output: HFS, FFS, ... when the input does not say it
    series_number: int | None = None  # DICOM output; default: the MR's Series Number + 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        # A library caller may pass plain strings ("torch"): compared by identity later, they would silently
        # turn features off (an engine "torch" that is not Engine.TORCH once ran without mixed precision).
        self.direction = _choice(Direction, self.direction, "--direction")
        self.engine = _choice(Engine, self.engine, "--engine")
        if self.format == OutputFormat.DICOM and self.direction is not Direction.MR2CT:
            raise UsageError("--format dicom writes synthetic CT series; for ct2mr choose nifti or mha.")
        if self.uncertainty == 1 or self.uncertainty < 0:
            raise UsageError("--uncertainty K needs K ≥ 2 passes (or 0 for none).")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: at least 1 case is read ahead.")
        if self.cpu_bf16 and self.engine is Engine.ONNXRUNTIME:
            raise UsageError("--cpu-bf16 is torch's CPU autocast; --engine onnxruntime runs the exported graph in "
                             "float32: leave one of them out.")
        if not self.error_threshold > 0:
            raise UsageError(f"--error-threshold {self.error_threshold}: an expected error in HU, above 0.")
        if self.patient_position and self.patient_position.strip().upper() not in PATIENT_POSITIONS:
            raise UsageError(f"--patient-position {self.patient_position}: not a DICOM Patient Position; use one of "
                             f"{', '.join(PATIENT_POSITIONS)}.")
        if self.series_number is not None and not 0 <= self.series_number <= SERIES_NUMBER_MAX:
            raise UsageError(f"--series-number {self.series_number}: a DICOM Series Number lies in "
                             f"[0, {SERIES_NUMBER_MAX}].")


@dataclass(kw_only=True)
class AttributeOptions(VolumeOptions):
    """``attribute``'s options; ``format`` nifti or mha: maps are float images, no CT series."""

    effect: Path | None = None  # folder of ground-truth effect maps (patient − control), by case id

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format == OutputFormat.DICOM:
            raise UsageError("--format dicom writes synthetic CT; abnormality maps are float images: choose nifti "
                             "or mha.")
        if self.effect is not None and not Path(self.effect).is_dir():
            raise UsageError(f"{self.effect}: --effect needs a folder of effect maps named by case id.")


@dataclass
class GenerateOptions:
    count: int
    seed: int = 0
    truncation: float | None = None  # |z_i| ≤ T, entries beyond it redrawn; None: plain N(0, I)
    device: str = DeviceChoice.AUTO  # auto, cpu, cuda, cuda:N or mps (choices.parse_device)
    overwrite: bool = False
    eval_data: Path | None = None  # real slices to compare with (the training data for memorisation)
    features: Path | None = None  # TorchScript feature extractor for FID/KID
    copy_ssim: float = 0.95  # nearest-neighbour SSIM from which a generated slice counts as a copy
    format: str = OutputFormat.NIFTI  # an output-format name of io/formats.py, not dicom

    def __post_init__(self) -> None:
        self.device = checked_device(self.device)
        self.format = str(self.format)
        if self.format == OutputFormat.DICOM:
            raise UsageError("--format dicom: generated slices belong to no patient or study; choose nifti or mha.")
        if self.seed < 0:
            raise UsageError(f"--seed {self.seed}: seeds are non-negative integers.")
        if self.count < 1:
            raise UsageError(f"--count {self.count}: generate at least 1 slice.")
        if self.truncation is not None and self.truncation <= 0:
            raise UsageError(f"--truncation {self.truncation}: give a positive bound T (|z| ≤ T), or leave it out.")
        if self.features is not None and self.eval_data is None:
            raise UsageError("--features is used by --eval; add --eval DATA with the real slices to compare with.")
        if not 0.0 < self.copy_ssim <= 1.0:
            raise UsageError(f"--copy-ssim {self.copy_ssim}: an SSIM threshold in (0, 1].")
