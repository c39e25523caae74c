#!/usr/bin/env bash
# The gate's decisions at the measured noise, on a GPU machine without internet (BENCHMARKS.md):
# gpt_pretrain on the h100 profile, 200 steps in fixed-token mode (104,857,600 tokens), two runs at once
# on the one GPU (fixed tokens: the scores do not depend on the clock).
#   bash benchmarks/decisions.sh noise   # train.py, seeds 0-4 (SEEDS=5 SEED_BASE=0), stored as this machine's
#                                        # baseline; again with PASS=rerun: a no-op decided against the first
#                                        # runs, and the stored baseline then has every seed twice (its paired noise)
#   bash benchmarks/decisions.sh decide  # CHANGES (default: total_batch_size 2^18 and the pure refactor of
#                                        # benchmarks/changes/gpt_pretrain), 3 seeds each, checks included,
#                                        # against it; CHANGES="DIFF:NAME ..." (paths under benchmarks/changes)
# State (results, the baseline) is kept in $AR_STATE (default /tmp/decisions) between calls and copied to
# $OUT with the stage's log and report. rustbpe's cp312 wheel in .whl/ (the `files` corpus needs it).
# SLOTS=1: one run at a time. PROFILE=cpu TOKENS=20480 tries the stages on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
STAGE=${1:?noise or decide}; STATE=${AR_STATE:-/tmp/decisions}; mkdir -p "$STATE"
[ -d /tmp/site ] || ! ls .whl/*.whl >/dev/null 2>&1 || python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
pip show -q autoresearch-bench 2>/dev/null || export PYTEST_PLUGINS=autoresearch_bench.plugin
export AR_CACHE_DIR=${AR_CACHE_DIR:-/tmp/arcache}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" || true
mkdir -p baselines/gpt_pretrain
cp -n "$STATE"/baseline-*.json baselines/gpt_pretrain/ 2>/dev/null || true  # the checkout is fresh each call
for f in baselines/gpt_pretrain/baseline-*.json; do [ -e "$f" ] && mv "$f" "${f/baseline-/}"; done
COMMON=(--autoresearch tasks/gpt_pretrain --ar-profile "${PROFILE:-h100}" --ar-tokens "${TOKENS:-104857600}" --ar-slots "${SLOTS:-2}"
        --ar-results "$STATE/results.tsv" --ar-json "$OUT/$STAGE.json" -p no:cacheprovider -q -rA)
case $STAGE in
  noise) ARGS=(-k test_benchmark --ar-seeds "${SEEDS:-5}" --ar-seed-base "${SEED_BASE:-0}" --ar-save-baseline
               --ar-description "train.py, ${PASS:-first} run") ;;
  decide)
    mkdir -p "$STATE/changes"
    ARGS=(--ar-seeds 3); names=()
    for d in ${CHANGES:-gpt_pretrain/01-total_batch_size-2p18.diff:batch gpt_pretrain/02-refactor-schedules.diff:refactor}; do
      dir=$(mktemp -d); cp tasks/gpt_pretrain/train.py "$dir/"
      git -C "$dir" apply "$PWD/benchmarks/changes/${d%%:*}" && mv "$dir/train.py" "$STATE/changes/${d##*:}.py"
      ARGS+=(--ar-candidate "$STATE/changes/${d##*:}.py"); names+=("${d##*:}")
    done
    k=$(printf ' or %s' "${names[@]}"); ARGS+=(-k "${k# or }") ;;
  *) echo "unknown stage $STAGE: noise or decide" >&2; exit 2 ;;
esac
( while sleep 10; do cp "$STATE/results.jsonl" "$OUT/" 2>/dev/null; done ) &
start=$(date +%s)
python -m pytest "${COMMON[@]}" "${ARGS[@]}" 2>&1 | while IFS= read -r line; do echo "$(date +%T) $line"; done \
  | tee "$OUT/$STAGE.log" | grep -v " | step " | tail -60 || true
echo "stage $STAGE: $(( $(date +%s) - start )) s wall" | tee -a "$OUT/$STAGE.log"
kill %1 2>/dev/null || true
cp "$STATE/results.jsonl" "$OUT/"
for f in baselines/gpt_pretrain/*.json; do [ -e "$f" ] && cp "$f" "$STATE/baseline-$(basename "$f")" && cp "$f" "$OUT/"; done
