"""Open the chapters in JupyterLab, with the kernel environment that nbval and CI use.

    python tools/lab.py              # or: make lab
    python tools/lab.py --port 8899  # extra arguments go to `jupyter lab`

A chapter run by hand must behave as it does under ``pytest --nbval-lax``: same profile (``ci``
unless ``MPLIB_PROFILE`` is set), same hash seed, one OpenMP thread, offline Hugging Face
libraries, no tqdm bars. Those variables are read when the kernel process starts, so they are set
here, on the server, whose kernels inherit them (tools/nbenv.py is the one list). The chapters'
first cell, ``mplib.lab.notebook.setup()``, then seeds Python, NumPy and torch as it does in CI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbenv  # noqa: E402


def lab_command(argv: list[str], environ: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Return the ``jupyter lab`` command line and the environment to run it with.

    The environment is ``environ`` updated with :data:`nbenv.KERNEL_ENV`, except that a
    ``MPLIB_PROFILE`` the user set explicitly is kept (the chapters then run that profile, which
    is no longer what CI stores; :func:`main` says so).
    """
    env = dict(environ)
    user_profile = environ.get("MPLIB_PROFILE")
    nbenv.apply(env)
    if user_profile:
        env["MPLIB_PROFILE"] = user_profile
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab", f"--notebook-dir={ROOT}", "book/03_fine_pruning.ipynb", *argv]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines often run as root
        cmd.append("--allow-root")
    return cmd, env


def main(argv: list[str] | None = None) -> None:
    cmd, env = lab_command(sys.argv[1:] if argv is None else argv, dict(os.environ))
    if not Path(cmd[0]).exists():
        sys.exit(f"{cmd[0]} not found: JupyterLab is not installed in this environment; "
                 "run `make venv` (it installs the pinned jupyterlab from requirements.txt).")
    if env["MPLIB_PROFILE"] != nbenv.KERNEL_ENV["MPLIB_PROFILE"]:
        print(f"note: MPLIB_PROFILE={env['MPLIB_PROFILE']}: the chapters will run that profile, "
              "not the `ci` profile whose outputs are stored in book/.", file=sys.stderr)
    os.chdir(ROOT)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
