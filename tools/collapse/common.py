"""Shared set-up for the collapse diagnosis (tools/collapse/*): data, model, result files.

Recipe under study: ``cpu`` profile + batch_size=16, epochs=2 (1,058 steps, 106 dense warm-up
steps, cubic over 740, keep 0.1), 6 layers, Rotten Tomatoes, seed 0.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

import mplib
from mplib.lab.models import load_encoder
from mplib.lab.profiles import get_profile
from mplib.lab.runner import build_loaders
from mplib.lab.train import evaluate, train  # noqa: F401  (re-exported for the scripts)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "collapse"
CACHE = ROOT / "results" / "cache" / "collapse"
TOTAL_STEPS = 1058      # 8,452 rows / 16 * 2 epochs, as the runner computes it
WARMUP = 106            # 10 % dense warm-up (also the LR warm-up)
COOLDOWN = 212          # 20 %
SEED = 0

assert str(Path(mplib.__file__).resolve()).startswith(str(ROOT)), mplib.__file__


def profile(**overrides):
    base = dict(batch_size=16, epochs=2, threads=1, device="cpu")
    base.update(overrides)
    return get_profile("cpu", **base)


def setup(max_eval=None, **overrides):
    """(profile, loaders, model) for the recipe; one torch thread."""
    torch.set_num_threads(1)
    prof = profile(max_eval=max_eval, **overrides)
    model, tok = load_encoder(prof.model, num_labels=2, num_layers=prof.num_layers, seed=SEED,
                              pooling=prof.pooling)
    loaders, _ = build_loaders("rt", tok, prof, SEED)
    return prof, loaders, model


def versions():
    import transformers
    return dict(python=platform.python_version(), torch=torch.__version__,
                transformers=transformers.__version__, mplib=mplib.__version__,
                torch_threads=torch.get_num_threads())


class Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __call__(self):
        return dict(wall_seconds=time.perf_counter() - self.wall,
                    cpu_seconds=time.process_time() - self.cpu)


def write_json(name, obj):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")
    os.replace(tmp, path)
    return path


def matrix_kind(name: str) -> str:
    for key, kind in (("attention.self.query", "Q"), ("attention.self.key", "K"),
                      ("attention.self.value", "V"), ("attention.output.dense", "attn_out"),
                      ("intermediate.dense", "ffn_in"), ("output.dense", "ffn_out")):
        if key in name:
            return kind
    raise ValueError(name)


def layer_index(name: str) -> int:
    return int(name.split("encoder.layer.")[1].split(".")[0])
