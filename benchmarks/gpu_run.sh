#!/usr/bin/env bash
# GPU measurements on a machine without internet (the device machine of BENCHMARKS.md).
#   bash benchmarks/gpu_run.sh upstream   karpathy/autoresearch's own train.py, attention via SDPA, 300 s
#   bash benchmarks/gpu_run.sh ours [PYTEST ARGS]   pytest --autoresearch tasks/gpt_pretrain on the same corpus
# Upstream's files stay outside the repo: copy shared/reference-run/* and upstream's prepare.py and
# train.py into .carry/ref/, and rustbpe's cp312 wheel into .carry/ref/wheels/ (see its README).
# Logs go to $OUT (or ./out); results files to .ar/gpu_run/, copied to $OUT at the end without their
# append ledgers (the device tool brings back at most 8 files).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT" .ar/gpu_run
trap 'cp .ar/gpu_run/results.* "$OUT"/ 2>/dev/null || true' EXIT
python -m pip install -q --no-index --no-deps .carry/ref/wheels/rustbpe*.whl 2>&1 | grep -v WARNING || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
case "${1:?upstream or ours}" in
  upstream)
    ( cd .carry/ref && TB=${TB:-300} ATTN=${ATTN:-sdpa} OUT=$OUT bash run.sh ) 2>&1 | tail -40 ;;
  ours)
    shift
    [ -f ~/.cache/autoresearch/data/shard_06542.parquet ] || python .carry/ref/build_corpus.py /usr /opt
    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
    set -o pipefail
    python -m pytest -p autoresearch_bench.plugin -p no:cacheprovider tasks/gpt_pretrain --autoresearch \
      --ar-results .ar/gpu_run/results.tsv "$@" 2>&1 | tee "$OUT/ours.log" | grep -v "^  gpt_pretrain/" | tail -60 ;;
esac
