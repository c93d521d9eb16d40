"""Render ``docs/images/phantom.png``: one paired phantom case and one attribution case.

Rows: the paired case's MR, CT and labels in axial, coronal and sagittal views through the
lateral ventricles; then the attribution subject's control, patient and ground-truth effect
(patient - control, blue where the patient is darker) in axial and coronal views.

    python scripts/phantom_montage.py [--out docs/images/phantom.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsynth import viz
from medsynth.phantom import LABEL_NAMES, make_attribution_case, make_head

_MR_WINDOW = (0.0, 1000.0)
_CT_WINDOW = (-300.0, 1300.0)  # fat, soft tissue, diploë and cortical bone apart in one view
_VIEWS = ("axial", "coronal", "sagittal")


def view_centre(weight: np.ndarray) -> tuple[int, int, int]:
    """Where to cut: through the middle third of the head in x and y, at the axial and coronal
    levels with the most ``weight``, and 3 voxels right of the midline so that the sagittal view
    shows the medial cortex rather than the CSF of the interhemispheric fissure."""
    nx, ny, _ = weight.shape
    central = np.abs(weight[nx // 3 : 2 * nx // 3, ny // 3 : 2 * ny // 3])
    _, j, k = (int(np.argmax(central.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3))
    return nx // 2 + 3, ny // 3 + j, k


def inner_csf(labels: np.ndarray) -> np.ndarray:
    """CSF away from the brain surface, mostly the ventricles: all but the largest CSF component."""
    components, _ = ndimage.label(labels == LABEL_NAMES.index("csf"))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return (components > 0) & (components != np.argmax(sizes))


def paired_rows(seed: int) -> tuple[list[list[np.ndarray]], list[str]]:
    head = make_head(seed)
    centre = view_centre(inner_csf(head.labels))  # through the ventricles
    rows = [
        [viz.window(s, *_MR_WINDOW) for s in viz.mid_slices(head.mr, centre=centre)],
        [viz.window(s, *_CT_WINDOW) for s in viz.mid_slices(head.ct, centre=centre)],
        [viz.label_colors(s) for s in viz.mid_slices(head.labels, centre=centre)],
    ]
    titles = [f"{name} {view}" for name in ("MR", "CT", "labels") for view in _VIEWS]
    return rows, titles


def attribution_rows(seed: int) -> tuple[list[list[np.ndarray]], list[str]]:
    case = make_attribution_case(seed)
    centre = view_centre(case.mr_effect)  # through the ventricles and lesions
    control = viz.mid_slices(case.control.mr, centre=centre)
    patient = viz.mid_slices(case.patient.mr, centre=centre)
    effect = viz.mid_slices(case.mr_effect, centre=centre)
    limit = float(np.abs(case.mr_effect).max())
    rows, titles = [], []
    for view in ("axial", "coronal"):
        grey = viz.window(getattr(patient, view), *_MR_WINDOW)
        rows.append([viz.window(getattr(control, view), *_MR_WINDOW), grey,
                     viz.overlay_signed_map(grey, getattr(effect, view), limit=0.5 * limit)])
        titles += [f"control {view}", f"patient {view}", "effect (patient-control)"]
    return rows, titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/phantom.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paired, paired_titles = paired_rows(args.seed)
    attribution, attribution_titles = attribution_rows(args.seed + 1)
    path = viz.save_grid(args.out, paired + attribution, paired_titles + attribution_titles, scale=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
