#!/usr/bin/env bash
# Start-up cost of the plugin for a pytest session that runs no autoresearch item: a one-test session,
# with the package at REV (before), the checkout's (after), and the plugin disabled, interleaved.
#   bash benchmarks/plugin_startup.sh [REV] [ROUNDS]     (in the activated venv; prints "<case> <seconds>")
set -euo pipefail
rev=${1:-main} rounds=${2:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/before" "$work/session"
git -C "$repo" archive "$rev" autoresearch_bench | tar -x -C "$work/before"
printf 'def test_one():\n    assert 1 + 1 == 2\n' > "$work/session/test_trivial.py"
printf '[pytest]\n' > "$work/session/pytest.ini"
cd "$work/session"
seconds() { { /usr/bin/time -f %e "$@" > /dev/null; } 2>&1; }
for _ in $(seq "$rounds"); do
    echo "before $(seconds env PYTHONPATH="$work/before" python -m pytest -q -p no:cacheprovider)"
    echo "after $(seconds python -m pytest -q -p no:cacheprovider)"
    echo "off $(seconds python -m pytest -q -p no:cacheprovider -p no:autoresearch)"
done
