#!/usr/bin/env bash
# Two GPUs, one experiment each: wall time of two candidates × 1 seed with --ar-executor xdist -n 2
# against the same two run one after the other (--ar-executor local), on one host with >= 2 GPUs.
#   bash benchmarks/two_gpu.sh [TASK] [PYTEST ARGS]   (TASK default tasks/gpt_pretrain; e.g. --ar-budget 60)
# The second candidate is the task's own train.py under another name (a copy in .ar/), so both
# runs do the same work and the ideal speed-up is 2×. Logs, results and wall times go to $OUT (or
# ./out); the results files' append ledgers stay in .ar/two_gpu/ (the device tool brings back 8 files).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
TASK=${1:-tasks/gpt_pretrain}; shift || true
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
[ "$(wc -l < "$OUT/gpus.txt")" -ge 2 ] || { echo "two_gpu.sh needs at least 2 visible GPUs" >&2; exit 1; }
python -c "import xdist" 2>/dev/null || { echo "pytest-xdist missing: pip install -e '.[xdist]'" >&2; exit 1; }
rm -rf .ar/two_gpu && mkdir -p .ar/two_gpu && cp "$TASK/train.py" .ar/two_gpu/twin.py
run() {  # NAME ARGS...: one timed pytest session, wall seconds to $OUT/NAME.seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  python -m pytest -p no:cacheprovider "$TASK" --autoresearch -k benchmark --ar-seeds 1 \
    --ar-candidate .ar/two_gpu/twin.py --ar-results ".ar/two_gpu/$name.tsv" "$@" > "$OUT/$name.log" 2>&1 || true
  python -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)" > "$OUT/$name.seconds"
  cp ".ar/two_gpu/$name.tsv" ".ar/two_gpu/$name.jsonl" "$OUT"/ 2>/dev/null || true
  grep -A4 "autoresearch benchmark" "$OUT/$name.log" | tail -3
}
run local --ar-executor local "$@"
run xdist --ar-executor xdist -n 2 "$@"
python - "$OUT" <<'PY'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("local", "xdist"):
    rows = list(csv.DictReader(open(out / f"{name}.tsv"), delimiter="\t"))
    print(f"{name:6s} wall {float((out / f'{name}.seconds').read_text()):7.1f} s   "
          + "  ".join(f"{r['description']}: {r['status']} {r['val_bpb']} ({r['seconds']} s train)" for r in rows))
local, xdist = (float((out / f"{n}.seconds").read_text()) for n in ("local", "xdist"))
print(f"speed-up {local / xdist:.2f}x (ideal 2x; session start-up and checks are not parallel)")
PY
