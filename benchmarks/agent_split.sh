#!/usr/bin/env bash
# Where an agent experiment's time goes on a GPU machine without internet (the device machine of
# BENCHMARKS.md): an agent (the random-search agent unless AGENT ARGS choose one: --agent replay
# --changes benchmarks/changes/gpt_pretrain, --agent-cmd CMD) on gpt_pretrain, fixed tokens, N
# experiments after the baseline; the experiments' records (experiments.jsonl: `seconds`, `split`),
# the runs' (bench.jsonl) and the loop's log to $OUT.
#   bash benchmarks/agent_split.sh [PROFILE] [TOKENS] [EXPERIMENTS] [AGENT ARGS...]
# rustbpe's cp312 wheel in .whl/ (the `files` corpus needs it); the harness from this checkout.
# AR_REPO=DIR keeps the agent's repository there: a second call with the same DIR resumes the run
# (same tag), so a loop longer than one device call spans two.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
PROFILE=${1:-h100}; TOKENS=${2:-26214400}; EXPERIMENTS=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
pip show -q autoresearch-bench 2>/dev/null || export PYTEST_PLUGINS=autoresearch_bench.plugin  # not installed: load it by name
export AR_CACHE_DIR=${AR_CACHE_DIR:-/tmp/arcache}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
# the agent's repository: this checkout's task folders and stored baselines, committed as they are
REPO=${AR_REPO:-$(mktemp -d /tmp/agent-repo.XXXX)}
if [ ! -d "$REPO/.git" ]; then
  mkdir -p "$REPO"; cp -r tasks baselines "$REPO"/  # the stored baselines: the loop pairs with them
  git -C "$REPO" init -q && git -C "$REPO" add -A && git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm snapshot
fi
RECORDS=$REPO/.ar/agent
# the records reach $OUT while the loop runs, so a run cut short still brings back what it measured
( while sleep 10; do cp "$RECORDS"/experiments.jsonl "$RECORDS"/bench.jsonl "$RECORDS"/logs/[01].xml "$OUT"/ 2>/dev/null; done ) &
CHOSEN=(--agent random-search)
for arg in "$@"; do case $arg in --agent|--agent-cmd|--model) CHOSEN=() ;; esac; done
python -m autoresearch_bench.cli agent --task "$REPO/tasks/gpt_pretrain" --tag split "${CHOSEN[@]}" \
  --profile "$PROFILE" --tokens "$TOKENS" --max-experiments "$EXPERIMENTS" --out "$RECORDS" "$@" 2>&1 \
  | while IFS= read -r line; do echo "$(date +%T) $line"; done | tee "$OUT/agent.log" | grep -v " | step " | tail -40 || true
kill %1 2>/dev/null || true
cp "$RECORDS"/experiments.jsonl "$RECORDS"/bench.jsonl "$OUT"/ || tail -40 "$RECORDS"/logs/*.log
