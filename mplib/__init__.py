"""mplib: movement pruning (Sanh, Wolf & Rush 2020), every score and straight-through estimator.

Importing mplib has no side effects: it does not seed random generators, change warnings,
logging or plot state, or touch the network.

Taught in: book/01_masks_and_magnitude.ipynb (the first chapter that imports it); the experiment
plumbing in :mod:`mplib.lab` is used by every chapter from book/03_fine_pruning.ipynb on.
"""

from .compact import load_compact, save_compact, size_report
from .config import PruningConfig
from .distill import Distillation, distillation_loss
from .global_topk import global_budgets, kth_largest
from .masked import MaskedLinear
from .methods import METHODS, PruningMethod, get_method
from .methods.l0 import expected_l0
from .methods.soft_movement import l1_sigmoid
from .objective import training_loss
from .optim import make_optimizer, param_groups
from .pruner import Pruner
from .report import remaining_fraction, sparsity_report
from .schedule import cubic_schedule
from .shrink import load_shrunk, save_shrunk, shrink_model
from .surgery import bake, masked_layers, unwrap, wrap
from .topk import keep_count, topk_mask

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Distillation",
    "MaskedLinear",
    "Pruner",
    "PruningConfig",
    "PruningMethod",
    "bake",
    "cubic_schedule",
    "distillation_loss",
    "expected_l0",
    "get_method",
    "global_budgets",
    "keep_count",
    "kth_largest",
    "l1_sigmoid",
    "load_compact",
    "load_shrunk",
    "make_optimizer",
    "masked_layers",
    "param_groups",
    "remaining_fraction",
    "save_compact",
    "save_shrunk",
    "shrink_model",
    "size_report",
    "sparsity_report",
    "topk_mask",
    "training_loss",
    "unwrap",
    "wrap",
]
