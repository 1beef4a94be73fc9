#!/bin/bash
# Runs the ablations one after the other (one process, one torch thread). Resumable: a run whose
# JSON exists is skipped. Usage: tools/collapse/queue.sh
cd "$(dirname "$0")"
export PYTHONPATH=/work/wt-collapse:/work/wt-collapse/tools/collapse HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
PY=/work/main/.venv/bin/python
R=/work/wt-collapse/results/collapse
run() { name=$1; shift; [ -f $R/ablate_$name.json ] || $PY ablate.py --name $name --stop 231 "$@"; }
[ -f /work/wt-collapse/results/cache/collapse/rt_tokens.pt ] || $PY export_data.py
run baseline
run sgd_scores --scores sgd
run no_ffn_out --exclude '.*\.layer\.\d+\.output\.dense'
run no_last_layer --exclude '.*\.layer\.5\..*'
[ -f $R/replica_cut.json ] || $PY replica.py --mode cut
run frozen_emb --freeze-emb
run rowwise --rowwise
echo queue done
