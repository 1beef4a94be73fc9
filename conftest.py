"""Repository-wide pytest set-up: give nbval's kernels the same environment as the execution
script (tools/nbenv.py), whatever subset of tests is run (``pytest book/01_...ipynb`` too)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_mplib_nbenv", Path(__file__).parent / "tools" / "nbenv.py"
)
_nbenv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_nbenv)
_nbenv.apply()
