#!/usr/bin/env bash
# bench-audit.sh: throughput and peak memory of `audit verify` and
# `audit replay` over a generated ledger (issue 5).
#
# Runs BenchmarkAudit in ./audit: it generates a ledger of
# $AUDIT_EVENTS events (default 1 000 000) the way ledger.Store writes them
# (real Decide/Apply, hash chain, state snapshots, every event type),
# publishes it to an embedded JetStream (file storage, temp dir), then times
# Verify and Replay (JSON Lines to a discarding writer) over it.
# op=read is the baseline: the same Scan doing nothing with the events;
# report verify events/s as a ratio to it, from the same run (the machine
# is shared and noisy).
# Reports events/s and peak-heap-MB: the peak Go heap above the heap before
# the operation, sampled every 10 ms. The embedded server shares the
# process, so its heap growth while serving the reads is included.
# Generation and publishing take about a minute per million events.
#
#   scripts/bench-audit.sh                     # 1 000 000 events, 3 runs
#   AUDIT_EVENTS=100000 AUDIT_COUNT=10 scripts/bench-audit.sh
set -euo pipefail

cd "$(dirname "$0")/.."
events=${AUDIT_EVENTS:-1000000}
count=${AUDIT_COUNT:-3}

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
TOKENLEDGER_BENCH_EVENTS=$events go test -run '^$' -bench '^BenchmarkAudit$' \
	-benchtime 1x -count "$count" -timeout 60m ./audit/
