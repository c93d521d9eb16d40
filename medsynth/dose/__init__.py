"""Dosimetric evaluation of synthetic CT (SPEC §8): plan on the CT, recompute on the sCT, compare doses.

An optional extra (``pip install "medsynth[dose]"``): planning and dose calculation use pyRadPlan
(the Python implementation of matRad, DKFZ; photon and proton machine data ship with it, nothing
is downloaded), the gamma index uses pymedphys (with numba). Nothing here imports them at module
level except :mod:`medsynth.dose.planning` and :mod:`medsynth.dose.metrics`, which callers reach
only after :func:`require_dose_extra`.
"""

from __future__ import annotations

import importlib.util

from medsynth.errors import UsageError

# Import names of what the extra installs, in the order a missing one is named.
_EXTRA_MODULES = ("pyRadPlan", "pymedphys", "numba")


def require_dose_extra() -> None:
    """Raise :class:`UsageError` (one line) if a package of the ``dose`` extra is not installed."""
    missing = [name for name in _EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"dose evaluation needs {', '.join(missing)}, which are not installed; "
                         'install the extra with: pip install "medsynth[dose]"')
