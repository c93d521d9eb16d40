"""Dosimetric evaluation of synthetic CT (SPEC §8): plan on the CT, recompute on the sCT, compare doses.

An optional extra (:data:`INSTALL`: pyRadPlan's runtime dependencies, then pyRadPlan without the LLM and cloud
clients it declares for its AI helpers; see ``pyproject.toml``): planning and dose calculation use pyRadPlan
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
#: The dose extra's install: pip cannot leave out a dependency's dependencies, hence pyRadPlan on its own.
INSTALL = 'pip install "medsynth[dose]" && pip install --no-deps pyradplan==0.5.0'


def require_dose_extra() -> None:
    """Raise :class:`UsageError` (one line) if a package of the ``dose`` extra is not installed."""
    missing = [name for name in _EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"dose evaluation needs {', '.join(missing)}, which are not installed; "
                         f"install the extra with: {INSTALL}")
