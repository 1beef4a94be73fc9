"""One-call set-up for the chapters: seeds, threads, quiet progress bars, plot style, profile.

Every chapter's single set-up cell runs ``facts = mplib.lab.notebook.setup()`` and prints ``facts``.
Nothing here runs at import time: importing :mod:`mplib` (or this module) seeds nothing and
changes no global state; :func:`setup` does all of it, explicitly.

Profiles scale the experiments without editing a notebook (STYLE rule 10): ``ci`` (small, CPU,
what ``pytest --nbval-lax`` executes), ``cpu`` (longer CPU runs) and ``full`` (paper-like runs,
GPU recommended). The profile comes from the argument, else the environment variable
``MPLIB_PROFILE``, else ``ci``.

Used in: the first code cell of every chapter (see tools/chapter_template.ipynb).
"""

from __future__ import annotations

import os
import platform
import random
import warnings

from .profiles import PROFILES

DEFAULT_PROFILE = "ci"

PLOT_STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
"""Matplotlib settings applied on top of matplotlib's own defaults by :func:`setup`."""


def resolve_profile(profile: str | None = None) -> str:
    """Return the profile name to use: ``profile``, else ``$MPLIB_PROFILE``, else ``"ci"``.

    Raises ``ValueError`` for a name not in :data:`mplib.lab.profiles.PROFILES`.
    """
    name = profile if profile is not None else os.environ.get("MPLIB_PROFILE", "")
    name = name.strip().lower() or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


def _quiet_hf() -> None:
    """Turn off progress bars and info logging of ``datasets`` and ``transformers``."""
    # tqdm.auto (imported by datasets) warns once, on stderr and with the venv's absolute path,
    # that ipywidgets is missing in a Jupyter kernel; the plain-text fallback is what we want.
    warnings.filterwarnings("ignore", message="IProgress not found")
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - datasets is a declared dependency
        pass
    try:
        import transformers

        transformers.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a declared dependency
        pass


def _plot_style() -> None:
    """Reset matplotlib to its defaults, then apply :data:`PLOT_STYLE` (skipped if absent)."""
    try:
        import matplotlib as mpl
    except ImportError:  # pragma: no cover - matplotlib is optional for the library
        return
    mpl.rcdefaults()  # matplotlib's own defaults (keeps the backend)
    mpl.rcParams.update(PLOT_STYLE)


def setup(profile: str | None = None, seed: int = 0, threads: int = 1) -> dict:
    """Make a chapter reproducible and quiet; return facts worth printing.

    * seeds Python's ``random``, NumPy and torch with ``seed``;
    * ``torch.set_num_threads(threads)`` and ``torch.use_deterministic_algorithms(True)``
      (one thread: the last digits of float sums depend on the thread count);
    * disables the progress bars of ``datasets`` and ``transformers``, their info logging and
      tqdm's "IProgress not found" warning
      (``TQDM_DISABLE=1`` in the kernel's environment silences the rest of tqdm; it is read only
      when tqdm is imported, so the execution script and pytest set it, not this function);
    * resets matplotlib to a fixed style (:data:`PLOT_STYLE`);
    * resolves the profile (see :func:`resolve_profile`).

    The device is the profile's (:mod:`mplib.lab.profiles`): ``ci`` and ``cpu`` always run on the
    CPU, so the stored outputs are the same on every machine; ``full`` uses a GPU when one is
    visible.

    Returns a dict with ``profile``, ``device``, ``seed``, ``threads`` and the versions of
    Python, torch and transformers.
    """
    name = resolve_profile(profile)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")

    # Needed by deterministic cuBLAS kernels; must be set before CUDA initialises.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Hugging Face tokenizers warn on stderr when a process forks after using them.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)

    _quiet_hf()
    _plot_style()

    device = PROFILES[name].device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:  # pragma: no cover
        transformers_version = "not installed"
    return {
        "profile": name,
        "device": device,
        "seed": seed,
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers_version,
    }
