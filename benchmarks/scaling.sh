#!/usr/bin/env bash
# N GPUs, one experiment each: the same batch of N runs (the task's train.py and N-1 copies of it under
# other names, one seed, so every run does the same work) one at a time, then with --ar-slots N, with
# --ar-executor xdist -n N and with --ar-executor ray, on one host with >= N GPUs. Wall time, runs per
# hour, per-GPU efficiency (the one-at-a-time wall / N over the parallel wall: 1.0 is linear), and the
# spread of the runs' scores (fixed-token mode: the same work, so the scores differ only by the GPU's
# nondeterminism, the pair noise of BENCHMARKS.md).
#   bash benchmarks/scaling.sh N [TASK] [PYTEST ARGS]   e.g. bash benchmarks/scaling.sh 4 tasks/gpt_pretrain
#                                                            --ar-profile h100 --ar-tokens 52428800
#   EXECUTORS="local slots xdist" to choose (default: local slots xdist ray; a missing one is skipped).
# Logs, results and wall times go to $OUT (or ./out); the results files' ledgers stay in .ar/scaling/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
N=${1:?how many GPUs}; TASK=${2:-tasks/gpt_pretrain}; shift $(( $# < 2 ? $# : 2 ))
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
[ "$(wc -l < "$OUT/gpus.txt")" -ge "$N" ] || { echo "scaling.sh $N needs at least $N visible GPUs" >&2; exit 1; }
rm -rf .ar/scaling && mkdir -p .ar/scaling
TWINS=()
for i in $(seq 1 $((N - 1))); do cp "$TASK/train.py" ".ar/scaling/twin$i.py"; TWINS+=(--ar-candidate ".ar/scaling/twin$i.py"); done
run() {  # NAME ARGS...: one timed pytest session, wall seconds to $OUT/NAME.seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  python -m pytest -p no:cacheprovider "$TASK" --autoresearch -k benchmark --ar-seeds 1 "${TWINS[@]}" \
    --ar-results ".ar/scaling/$name.tsv" "$@" > "$OUT/$name.log" 2>&1 || true
  python -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)" > "$OUT/$name.seconds"
  cp ".ar/scaling/$name.jsonl" "$OUT"/ 2>/dev/null || true
  grep -A$((N + 2)) "autoresearch benchmark" "$OUT/$name.log" | tail -"$N" || tail -5 "$OUT/$name.log"
}
for executor in ${EXECUTORS:-local slots xdist ray}; do
  case $executor in
    local) run local --ar-executor local "$@" ;;
    slots) run slots --ar-executor local --ar-slots "$N" "$@" ;;
    xdist) python -c "import xdist" 2>/dev/null && run xdist --ar-executor xdist -n "$N" "$@" \
             || echo "xdist: pytest-xdist missing (pip install -e '.[xdist]'), skipped" ;;
    ray) python -c "import ray" 2>/dev/null && run ray --ar-executor ray "$@" \
           || echo "ray: not installed (pip install -e '.[ray]'), skipped" ;;
  esac
done
python - "$OUT" "$N" <<'PY'
import json, statistics, sys
from pathlib import Path
out, n = Path(sys.argv[1]), int(sys.argv[2])
walls = {p.stem: float(p.read_text()) for p in out.glob("*.seconds")}
one = walls.get("local")
for name in ("local", "slots", "xdist", "ray"):
    if name not in walls:
        continue
    path = out / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    values = [r["value"] for r in rows if r.get("value") is not None]
    spread = f"scores {min(values):.4f}..{max(values):.4f} (std {statistics.stdev(values):.4f})" if len(values) > 1 else ""
    eff = f"per-GPU efficiency {one / n / walls[name]:.2f}" if one and name != "local" else ""
    print(f"{name:6s} wall {walls[name]:7.1f} s  {len(values)}/{n} ok  {3600 * len(values) / walls[name]:6.1f} runs/h  "
          f"{eff}  {spread}")
PY
