#!/usr/bin/env bash
# Runs `make test` ROUNDS times in a row (default 3) while busy loops keep
# every core saturated (HOGS per core, default 2), to show that the suite's
# verdicts do not depend on timing: a test may be slower under load, never
# wrong. Stops at the first failing round.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
per_core=${HOGS:-2}
hogs=$(( $(nproc) * per_core ))

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
for _ in $(seq "$hogs"); do
	( while :; do :; done ) &
	pids+=($!)
done
echo "test-loaded: $hogs busy loops on $(nproc) cores"

for r in $(seq "$rounds"); do
	echo "test-loaded: round $r of $rounds, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	start=$(date +%s)
	${MAKE:-make} test
	echo "test-loaded: round $r passed in $(( $(date +%s) - start )) s"
done
echo "test-loaded: $rounds rounds passed"
