"""World coordinates: medsynth's arrays and NIfTI live in RAS+ mm, DICOM and ITK in LPS+ mm."""

from __future__ import annotations

import numpy as np

RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS+ <-> LPS+ for homogeneous points and affines; its own inverse
