#!/bin/bash
# Background queue of the recipe measurements (1 torch thread each, one at a time).
# Resumable: rerun this script after a kill; finished runs are skipped (their JSON exists),
# an interrupted run resumes from results/cache/runs/<run_id>/checkpoint.pt.
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TQDM_DISABLE=1
for spec in ${@:-ci_a ci_b cpu_dense long2layer hazard6layer long6layer}; do
  echo "== $(date -u +%FT%TZ) $spec"
  .venv/bin/python -m mplib sweep results/recipes/specs/$spec.json --output results/recipes \
      --threads 1 --no-progress || echo "!! $spec failed with $?"
done
echo "== $(date -u +%FT%TZ) queue done"
