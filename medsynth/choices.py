"""The named choices users type on the command line and in config files, as ``StrEnum``s.

They live here, below every layer and free of heavy imports, so that the CLI can build its help and
validate options without importing torch or MONAI; the library modules re-export the ones they use.
"""

from __future__ import annotations

from enum import StrEnum


class DeviceChoice(StrEnum):
    """Where to train or infer: ``auto`` picks CUDA when available, else the CPU; ``cuda`` is GPU 0 (under
    ``torchrun`` each rank's own), ``cuda:N`` GPU N, ``mps`` an Apple GPU. See :func:`parse_device`."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


DEVICE_METAVAR = "auto|cpu|cuda[:N]|mps"
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda (GPU 0), cuda:N (GPU N) or mps. Default: auto."
CPU_BF16_HELP = ("On the CPU (elsewhere --amp decides), bf16 autocast: about 2x faster for a 3D model where the CPU "
                 "computes bf16 natively (medsynth info), 1.1x for a 2.5D one; the output moves by about 1 HU "
                 "(docs/performance.md). Default: float32.")


def parse_device(text: str) -> str:
    """A device as typed (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, any case), lower-cased; a
    ValueError naming the choices otherwise. Whether the device exists is checked where it is used."""
    value = str(text).strip().lower()
    kind, colon, index = value.partition(":")
    if (not colon and value in set(DeviceChoice)) or (kind == "cuda" and colon and index.isdigit()):
        return value
    raise ValueError(f"device '{text}': use auto, cpu, cuda, cuda:N or mps (N: a GPU number, e.g. cuda:1)")


class FamilyName(StrEnum):
    """The model families ``medsynth train`` knows; ``vox2vox`` is pix2pix with 3D networks."""

    PIX2PIX = "pix2pix"
    VOX2VOX = "vox2vox"
    CYCLEGAN = "cyclegan"
    VAGAN = "vagan"
    FASTGAN = "fastgan"


class Direction(StrEnum):
    """Translation direction."""

    MR2CT = "mr2ct"
    CT2MR = "ct2mr"


class Protocol(StrEnum):
    """Which challenge's definitions the image metrics follow."""

    synthrad2023 = "synthrad2023"
    synthrad2025 = "synthrad2025"


class Modality(StrEnum):
    """Which dose plans ``evaluate --dose`` makes: photon IMRT, proton IMPT, or both."""

    photon = "photon"
    proton = "proton"
    both = "both"

    def kinds(self) -> tuple[str, ...]:
        """The plan kinds this choice stands for, photon first."""
        return ("photon", "proton") if self is Modality.both else (self.value,)


class PhantomKind(StrEnum):
    """Which data set to write: one per model family."""

    PAIRED = "paired"
    UNPAIRED = "unpaired"
    ATTRIBUTION = "attribution"
    SLICES = "slices"
    SYNTHRAD = "synthrad"


class OutputFormat(StrEnum):
    """``nifti``: ``<name>.nii.gz``; ``mha``: ``<name>.mha`` (SynthRAD 2025's format); ``dicom``: a series
    folder ``<name>/`` (synthetic CT only)."""

    NIFTI = "nifti"
    MHA = "mha"
    DICOM = "dicom"


class ImageFormat(StrEnum):
    """The formats of outputs that are no CT series (maps, slices): ``nifti`` or ``mha``, as :class:`OutputFormat`."""

    NIFTI = "nifti"
    MHA = "mha"


class Engine(StrEnum):
    """What runs the network at inference: PyTorch, or the exported ONNX graph under onnxruntime."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
class Registration(StrEnum):
    """How ``prepare`` moves the CT onto the MR."""

    RIGID = "rigid"
    AFFINE = "affine"
    DEFORMABLE = "deformable"
    NONE = "none"


PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL", "LFP", "LFS", "RFP", "RFS",
                     "AFDR", "AFDL", "PFDR", "PFDL")  # DICOM Patient Position, PS3.3 C.7.3.1.1.2
SERIES_NUMBER_MAX = 2**31 - 1  # a DICOM Series Number is an IS: a signed 32-bit integer
