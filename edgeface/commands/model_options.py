"""The help of the options that pick the model and how it runs, shared by ``edgeface run`` and ``edgeface enroll``.

Light on purpose (no numpy): ``edgeface --help`` imports it.  The choices are :mod:`edgeface.runtime.settings`'
tables, which the checks read as well.
"""

from __future__ import annotations

from edgeface.runtime.bundle import FORMAT_PREFERENCE  # light: no numpy, no interpreter
from edgeface.runtime.settings import BACKEND_CHOICES, FORMAT_CHOICES

MODEL_HELP = ("Model bundle folder (from `edgeface export`) or the name of a shipped model (default, mobilefacenet); "
              "default: the default bundle shipped in the package.")
FORMAT_HELP = (f"Model file of the bundle: {', '.join(FORMAT_CHOICES)} (default: the first the bundle has of "
               f"{', '.join(FORMAT_PREFERENCE)}).")
BACKEND_HELP = f"TFLite interpreter: {', '.join(BACKEND_CHOICES)} (default: the first one installed)."
