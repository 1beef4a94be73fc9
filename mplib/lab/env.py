"""Facts about where a run ran, and the small chores every experiment shares.

Every result file the runner, the probes and the benchmarks write carries the same two blocks:
:func:`versions` (python, torch, transformers, datasets, mplib) and :func:`hardware` (platform,
CPU model, core count, torch threads, device, CUDA device name). :func:`write_json` writes a
result atomically, so a killed process never leaves half a file behind.

Used by: :mod:`mplib.lab.runner`, :mod:`mplib.lab.probes`, ``bench/``.
"""

from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path

import torch

__all__ = ["hardware", "resolve_device", "seed_everything", "versions", "write_json"]


def versions() -> dict:
    """Versions of Python and of the packages a result depends on."""
    import datasets
    import transformers

    from .. import __version__

    return dict(python=platform.python_version(), torch=torch.__version__,
                transformers=transformers.__version__, datasets=datasets.__version__,
                mplib=__version__)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        name)
    except OSError:
        pass
    return name


def hardware(device: torch.device | str = "cpu") -> dict:
    """Platform, CPU, core count, torch threads, device, world size and CUDA device name."""
    from ..distributed import world_size

    device = torch.device(device)
    out = dict(platform=platform.platform(), machine=platform.machine(), cpu=cpu_model(),
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               device=str(device), world_size=world_size(), cuda_device=None)
    if device.type == "cuda":
        out["cuda_device"] = torch.cuda.get_device_name(device)
    return out


def resolve_device(kind: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` -> this process's device."""
    from ..distributed import device_for_rank

    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA device is available; "
                           "use device='cpu' (or 'auto')")
    return device_for_rank(kind)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random`` and torch (every device)."""
    random.seed(seed)
    torch.manual_seed(seed)


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
