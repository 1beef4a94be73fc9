"""One rank of the 2-process DDP test (spawned by tests/test_ddp.py; gloo, CPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

CASES = [
    ("movement", dict(keep_ratio=0.3), True),
    ("movement", dict(keep_ratio=0.3, scope="global"), True),
    ("magnitude", dict(keep_ratio=0.3, scope="global"), True),
    ("random", dict(keep_ratio=0.3), True),
    ("soft_movement", dict(tau=0.1, lam=1.0), True),
    ("l0", dict(lam=1.0), True),
    ("accumulated_movement", dict(keep_ratio=0.3), True),
    ("accumulated_movement", dict(keep_ratio=0.3), False),  # without mplib's sync: drifts
]


def _state(pruner) -> dict:
    import mplib

    layers = mplib.masked_layers(pruner.model)
    return dict(
        masks={n: layer.mask() for n, layer in layers.items()},
        scores={n: (None if layer.scores is None else layer.scores.detach().clone())
                for n, layer in layers.items()},
        budgets=[layer.budget for layer in layers.values()],
        weights={n: layer.weight.detach().clone() for n, layer in layers.items()},
    )


def _same(states: list[dict], key: str) -> bool:
    a, b = states[0][key], states[1][key]
    if isinstance(a, list):
        return a == b
    return all((a[k] is None and b[k] is None) or torch.equal(a[k], b[k]) for k in a)


def worker(rank: int, world: int, init_file: str, tmp: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MPLIB_CACHE=str(Path(tmp) / f"cache-rank{rank}"), HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    from _train_helpers import tiny_model, tiny_tokenizer

    import mplib
    from mplib import distributed as D
    from mplib.lab import profiles, runner
    from mplib.lab.train import train

    prof = profiles.Profile(name="tiny", model=str(Path(tmp) / "enc"), max_length=16,
                            batch_size=8, eval_batch_size=16, epochs=1, lr=1e-2, log_every=3,
                            threads=1, device="cpu")
    tok = tiny_tokenizer(Path(tmp) / f"tok{rank}")
    loaders, _ = runner.build_loaders(str(Path(tmp) / "toy"), tok, prof, seed=0)
    report = {"train_batches": len(loaders["train"]),
              "first_batch": loaders["train"].dataset[0]["input_ids"]}
    for method, cfg, sync in CASES:
        model = tiny_model(seed=0)
        T = 8
        pruner = mplib.Pruner(model, mplib.PruningConfig(method=method, **cfg), total_steps=T,
                              warmup_steps=1, cooldown_steps=2)
        torch.manual_seed(rank)  # different dropout per rank, as in real runs
        net = D.wrap_ddp(model, torch.device("cpu"))
        train(net, pruner, loaders, total_steps=T, lr=1e-2, score_lr=5e-2, log_every=4,
              progress=False, is_main=rank == 0,
              on_step_end=(lambda s, m: D.sync_score_buffers(m)) if sync else None)
        states = D.gather_objects(_state(pruner))
        key = f"{method}-{cfg.get('scope', 'local')}-{'sync' if sync else 'nosync'}"
        report[key] = {k: _same(states, k) for k in ("masks", "scores", "budgets", "weights")}
        report[key]["remaining"] = mplib.remaining_fraction(model)
    try:
        D.check_supported("snip")
        report["snip_refused"] = False
    except ValueError as err:
        report["snip_refused"] = "accumulated_movement" in str(err)

    # the runner end to end: DistributedSampler, DDP (frozen embeddings), only rank 0 writes
    profiles.PROFILES["tiny"] = prof.with_overrides(freeze_embeddings=True)
    res = runner.run_experiment(
        runner.RunSpec(task=str(Path(tmp) / "toy"), method="movement", keep_ratio=0.25),
        "tiny", output=Path(tmp) / "out", cache_dir=Path(tmp) / "runs", progress=False)
    outs = D.gather_objects((res["remaining"], res["metrics"], res["train"]["world_size"]))
    report["runner_same_on_both_ranks"] = outs[0] == outs[1]
    report["runner_world_size"] = outs[0][2]
    if rank == 0:
        (Path(tmp) / "report.json").write_text(json.dumps(report))
    dist.destroy_process_group()
