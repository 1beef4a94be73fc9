"""The one environment every notebook kernel runs in (execution script and nbval alike).

The stored outputs of book/*.ipynb are made by tools/execute_notebooks.py and compared by
``pytest --nbval-lax``; both must start their kernels with exactly these variables, otherwise
nbval reports differences (e.g. "Missing output fields: stderr" when only one side had tqdm
bars). Several are read only when the kernel starts (PYTHONHASHSEED, OMP_NUM_THREADS) or when a
library is imported (TQDM_DISABLE, HF_HUB_OFFLINE), so they cannot be set from inside a
notebook. This file imports nothing; conftest.py at the repo root and the execution script load
it by path.
"""

import os

KERNEL_ENV = {
    "PYTHONHASHSEED": "0",  # stable str hashing: set/dict-of-str order is the same every run
    "HF_HUB_OFFLINE": "1",  # never touch the Hugging Face hub (fail in seconds, not after retries)
    "HF_DATASETS_OFFLINE": "1",
    "TQDM_DISABLE": "1",  # no progress bars, including those of datasets/transformers
    "OMP_NUM_THREADS": "1",  # float sums depend on the thread count
    "MPLIB_PROFILE": "ci",  # the small profile CI executes (see mplib.lab.notebook)
}


def apply(environ=os.environ) -> dict:
    """Write :data:`KERNEL_ENV` into ``environ`` (overriding) and return it."""
    environ.update(KERNEL_ENV)
    return environ
