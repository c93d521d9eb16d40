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
# Below this no scanner measured anything: padding sits at -2048, -3024 or -2000; air's noise reaches a
# few tens of HU below -1024, which stays body where it lies inside the patient.
PADDING_BELOW_HU = -1124.0
# A couch's top shell (carbon fibre over foam, a few mm) touches the patient's back; eroding the foreground
# this many voxels breaks that contact, so the largest component is the patient alone (see body_mask).
_COUCH_SHELL_VOXELS = 3


def body_mask_any(image: np.ndarray, modality: str = "ct") -> np.ndarray:
    """:func:`body_mask` of a 3D image, or of a 2D one (a planar slice) taken as one slice thick."""
    if image.ndim == 2:
        return body_mask(image[..., None], modality=modality)[..., 0]
    return body_mask(image, modality=modality)


def body_mask(image: np.ndarray, dilation: int = 3, modality: str = "ct") -> np.ndarray:
    """Boolean body mask (X, Y, Z) of a 3D CT (HU, ``modality="ct"``) or MR (``"mr"``) image.

    1. Foreground = voxels above Otsu's threshold; for CT, values below −1024 HU (scanner padding)
       are raised to −1024 first; MR values are used as they are, so an offset or scale of the MR
       gives the same mask.
    2. Keep the largest 6-connected component (drops the table, noise specks, stray objects); on CT
       after a geodesic opening (:func:`without_couch`), so a couch touching the patient goes too.
    3. Fill holes slice-wise and in 3D (:func:`fill_holes`): enclosed air and dark bone are body.
    4. Dilate by a ball of ``dilation`` voxels, so that the skin and a margin around it are scored.
    5. CT: voxels below :data:`PADDING_BELOW_HU` (padding outside the reconstruction circle) are never body,
       even where the dilation reaches them: no scanner measured them, and no synthetic CT can equal them.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"a body mask needs a 3D image; this one has shape {image.shape}.")
    if dilation < 0:
        raise InputError(f"the body-mask dilation must be 0 or more voxels, not {dilation}.")
    if modality not in ("ct", "mr"):
        raise InputError(f"a body mask is made for modality 'ct' or 'mr', not '{modality}'.")
    if modality == "mr":
        return filled_and_dilated(largest_component(mr_foreground(image)), dilation)
    body, couch = without_couch(otsu_foreground(image))
    return filled_and_dilated(body, dilation) & ~couch & (image >= PADDING_BELOW_HU)


def filled_and_dilated(body: np.ndarray, dilation: int) -> np.ndarray:
    """:func:`fill_holes` of ``body``, dilated by a ball of ``dilation`` voxels, computed in the body's bounding
    box widened by ``dilation`` + 1 (the same result: the fill and the ball reach no farther), so a body filling
    a third of a 647² × 104 grid costs a third of the whole grid's work."""
    present = [np.flatnonzero(body.any(axis=tuple(a for a in range(body.ndim) if a != axis)))
               for axis in range(body.ndim)]
    if any(p.size == 0 for p in present):
        return body.copy()
    box = tuple(slice(max(0, p[0] - dilation - 1), p[-1] + dilation + 2) for p in present)
    inside = fill_holes(body[box])
    out = np.zeros_like(body)
    out[box] = ndi.binary_dilation(inside, ball(dilation)) if dilation else inside
    return out


def without_couch(foreground: np.ndarray, shell: int = _COUCH_SHELL_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """(body, couch): the largest component of a CT foreground without what only joins it through necks
    thinner than about 2·``shell`` voxels and reaches far beyond it (a couch whose thin top shell touches the
    patient's back), and that couch.

    The core is the largest component of the foreground eroded ``shell`` times; what lies within ``shell``
    steps of the core is body (an opening). The rest of the foreground is kept piece by piece where the piece
    stays within 3·``shell`` steps of the core (the rims and tips an opening shaves off any body) and is couch
    where it reaches farther and is thin throughout (a couch's shell runs under the whole patient and beyond;
    an arm touching the trunk is thick somewhere). A second opening without the couch found catches the bits
    of shell the first one let through; thin pieces touching the couch are couch.
    Steps are of the 18-neighbourhood, a cheap stand-in for a ball on a 512² × 130 CT.
    """
    couch = np.zeros_like(foreground)
    body = largest_component(foreground)
    for _ in range(2):
        eroded = ndi.binary_erosion(foreground & ~couch, _STEP, iterations=shell)
        if not eroded.any():  # a body thinner than the shell (a tiny image): nothing to cut
            break
        body, found = _opened_body(foreground & ~couch, largest_component(eroded), couch, shell)
        if not found.any():
            break
        couch |= found
    if couch.sum() > 0.5 * body.sum():  # a "couch" half the body's size is no couch: a body cut at thin necks
        return largest_component(foreground), np.zeros_like(foreground)
    return body, couch


_STEP = ndi.generate_binary_structure(3, 2)


def _opened_body(foreground: np.ndarray, core: np.ndarray, couch: np.ndarray, shell: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(body, couch found) of one pass of :func:`without_couch`, ``couch`` being what earlier passes found."""
    opened = foreground & ndi.binary_dilation(core, _STEP, iterations=shell)
    pieces, _ = ndi.label(foreground & ~opened)
    far = foreground & ~ndi.binary_dilation(core, _STEP, iterations=3 * shell)
    touching = ndi.binary_dilation(couch) if couch.any() else couch
    # An arm or a scalp beyond dark bone is thick somewhere and stays body; a couch's shell is thin throughout.
    thick = np.unique(pieces[ndi.binary_erosion(pieces > 0, _STEP, iterations=shell)])
    dropped = np.setdiff1d(np.unique(pieces[far | touching]), np.append(thick, 0))
    found = np.isin(pieces, dropped)
    return largest_component(opened | ((pieces > 0) & ~found)), found


def otsu_foreground(image: np.ndarray, air_hu: float | None = _AIR_HU) -> np.ndarray:
    """Voxels brighter than Otsu's threshold of the image; values below ``air_hu`` count as ``air_hu``
    (CT's out-of-field padding), None for images without absolute units (MR)."""
    values = image if air_hu is None else np.maximum(image, air_hu)
    if float(values.max()) == float(values.min()):
        raise InputError("the image is constant, so no body can be told from the background; "
                         "give a mask with --mask.")
    # Otsu's between-class variance squares intensities: an MR stored at 1e19 would overflow float32. The
    # threshold does not change with the scale, so it is found on the image divided by its largest magnitude.
    scale = np.float32(max(abs(float(values.max())), abs(float(values.min()))))
    unit = values / scale
    # Flat: scikit-image takes an (X, Y, 3) volume (a 3-slice slab) for an RGB picture and warns.
    return unit > threshold_otsu(unit.ravel())


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

    Each pass is ``ndi.binary_fill_holes`` with in-slice connectivity, computed as one labelling of the
    background (a hole is a background component that touches no edge of its slice) instead of
    scipy's dilation until nothing changes: the same voxels, 2.3x faster on a 647² × 104 grid.
    """
    filled = mask
    for axis in range(mask.ndim):
        labels, count = ndi.label(~filled, structure=_in_plane_cross(axis, mask.ndim))
        outside = np.zeros(count + 1, dtype=bool)
        outside[0] = True  # label 0: the mask itself
        for edge in range(mask.ndim):
            if edge != axis:  # a slice's edges: the array's faces across the slices
                outside[np.take(labels, [0, -1], axis=edge)] = True
        filled = filled | ~outside[labels]
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

