"""Body masks by the SynthRAD convention: Otsu threshold, largest component, holes filled, dilated.

The mask decides which voxels a synthetic CT is scored on and where training patches are drawn,
so it has to hold the whole body (air cavities, dark bone on MR included) and nothing of the
scanner table or of noise in the background. It works on any modality whose body is brighter than
its background: CT in HU and magnitude MR. Only CT has absolute units: an MR mask must not depend on
where the scanner or an export put zero, so no absolute value enters it (Otsu's threshold moves with
any offset or scale of the image).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import ball

from medsynth.errors import InputError

# Scanners pad outside the reconstruction circle with -2048 or -3024 HU. Left in, that padding
# becomes Otsu's dark class and the air around the body its bright one; air is -1024 anyway.
_AIR_HU = -1024.0


def body_mask(image: np.ndarray, dilation: int = 3, modality: str = "ct") -> np.ndarray:
    """Boolean body mask (X, Y, Z) of a 3D CT (HU, ``modality="ct"``) or MR (``"mr"``) image.

    1. Foreground = voxels above Otsu's threshold; for CT, values below −1024 HU (scanner padding)
       are raised to −1024 first; MR values are used as they are, so an offset or scale of the MR
       gives the same mask.
    2. Keep the largest 6-connected component (drops the table, noise specks, stray objects).
    3. Fill holes slice-wise and in 3D (:func:`fill_holes`): enclosed air and dark bone are body.
    4. Dilate by a ball of ``dilation`` voxels, so that the skin and a margin around it are scored.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"a body mask needs a 3D image; this one has shape {image.shape}.")
    if dilation < 0:
        raise InputError(f"the body-mask dilation must be 0 or more voxels, not {dilation}.")
    if modality not in ("ct", "mr"):
        raise InputError(f"a body mask is made for modality 'ct' or 'mr', not '{modality}'.")
    foreground = otsu_foreground(image) if modality == "ct" else mr_foreground(image)
    body = fill_holes(largest_component(foreground))
    return ndi.binary_dilation(body, ball(dilation)) if dilation else body


def otsu_foreground(image: np.ndarray, air_hu: float | None = _AIR_HU) -> np.ndarray:
    """Voxels brighter than Otsu's threshold of the image; values below ``air_hu`` count as ``air_hu``
    (CT's out-of-field padding), None for images without absolute units (MR)."""
    values = image if air_hu is None else np.maximum(image, air_hu)
    if float(values.max()) == float(values.min()):
        raise InputError("the image is constant, so no body can be told from the background; "
                         "give a mask with --mask.")
    return values > threshold_otsu(values)


def mr_foreground(image: np.ndarray, level: float = 0.25) -> np.ndarray:
    """MR voxels brighter than ``level`` of the way from the background's median to the body's median.

    Otsu's threshold alone moves with the share of background in the field of view (it balances the two
    classes), so the same head in a larger field of view would get another mask and another scaling.
    The medians of the two classes Otsu finds hardly move, and a threshold between them moves with any
    offset or scale of the MR exactly as the image does.
    """
    rough = otsu_foreground(image, air_hu=None)
    if rough.all() or not rough.any():
        return rough
    background, body = float(np.median(image[~rough])), float(np.median(image[rough]))
    return image > background + level * (body - background)


def largest_component(foreground: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a boolean volume."""
    labels, count = ndi.label(foreground)
    if count == 0:
        raise InputError("no foreground was found for a body mask; give a mask with --mask.")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice along each axis in turn; this includes every 3D hole.

    A 3D fill alone misses cavities that touch the outside somewhere (sinuses through the nose,
    the trachea through the mouth): in a slice across them they are enclosed. Filling along all
    three axes does not depend on which array axis is axial. No separate 3D fill is needed: a
    cavity enclosed in 3D is enclosed in every slice through it, and once the last pass is done
    every remaining background voxel reaches the border within its slice, hence in 3D.
    """
    filled = mask
    for axis in range(mask.ndim):
        filled = ndi.binary_fill_holes(filled, structure=_in_plane_cross(axis, mask.ndim))
    return filled


def _in_plane_cross(axis: int, ndim: int) -> np.ndarray:
    """Face connectivity within the slices perpendicular to ``axis`` and none across them.

    With it, one ``binary_fill_holes`` call fills every slice independently: background reached
    from a slice's border cannot leak into the neighbouring slices.
    """
    structure = np.zeros((3,) * ndim, dtype=bool)
    centre = [slice(None)] * ndim
    centre[axis] = 1
    structure[tuple(centre)] = ndi.generate_binary_structure(ndim - 1, 1)
    return structure
