"""Data-parallel fine-pruning (``torchrun --nproc_per_node N``): every rank keeps the same masks.

Under ``DistributedDataParallel`` each of the ``N`` processes sees its own shard of every batch
and DDP averages the *parameter* gradients before the optimizer step. Each method declares what
that means for it (its ``ddp`` attribute, :mod:`mplib.methods`); the rules are:

* ``exact`` -- nothing to do: learned scores are Parameters whose gradient
  ``(dL/dW') ⊙ W`` is all-reduced with the weights', so AdamW makes the same update on every
  rank; magnitude follows the synchronised weights; random scores come from a seeded generator.
  ``Top_v(S)``, ``sigmoid(S) > tau`` and global budgets agree on every rank.
* ``average_buffers`` -- a score *buffer* updated from the local (pre-all-reduce) gradient
  drifts apart between ranks; :func:`sync_score_buffers` averages it after each step. For an
  update linear in the gradient (accumulated_movement) the average is exactly the one-process
  rule on the global batch.
* ``refuse`` -- an update that is not linear in the gradient (snip's ``|W ⊙ grad_W|``): the
  average of per-rank scores is another saliency than one process computes, so
  :func:`check_supported` refuses it under DDP.

Only rank 0 writes result files and checkpoints; every rank evaluates the full split.

Taught in: book/14_scaling_out.ipynb.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch.distributed as dist
from torch import nn

from .surgery import masked_layers


def _policy(method: str) -> str:
    """The method's ``ddp`` attribute: ``exact``, ``average_buffers`` or ``refuse``."""
    from .methods import get_method

    return get_method(method).ddp


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_type: str = "cpu") -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``); True if distributed.

    Backend: NCCL on CUDA, gloo on CPU. On CUDA the process uses GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def device_for_rank(device_type: str) -> torch.device:
    if device_type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def check_supported(method: str) -> None:
    """Raise if ``method`` cannot be trained data-parallel with identical semantics."""
    if world_size() > 1 and _policy(method) == "refuse":
        raise ValueError(
            f"method {method!r} updates its scores from each process's local gradient in a way "
            "that is not linear in the gradient, so averaging across processes would not give "
            "the single-process rule. Run it on one process (no torchrun), or use a method whose "
            "DDP behaviour is exact (e.g. movement, or accumulated_movement for a gradient "
            "accumulator)"
        )


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (buffers are synchronised by mplib, not DDP)."""
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # buffers are equal at the start; after that only 'average_buffers' methods change theirs,
    # and sync_score_buffers keeps those equal -- no per-forward broadcast of all buffers needed
    if "forward_sync_buffers" in inspect.signature(ddp).parameters:  # torch >= 2.13
        return ddp(model, device_ids=ids, forward_sync_buffers=False)
    return ddp(model, device_ids=ids, broadcast_buffers=False)


@torch.no_grad()
def sync_score_buffers(model: nn.Module) -> None:
    """Average the score *buffers* of accumulated_movement layers over all ranks (in place)."""
    n = world_size()
    if n == 1:
        return
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    for layer in masked_layers(core).values():
        if layer.rule.ddp == "average_buffers":
            dist.all_reduce(layer.scores, op=dist.ReduceOp.SUM)
            layer.scores.div_(n)


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` on one process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
