#!/usr/bin/env bash
# bench.sh: the standard performance suite of issue 6 on this machine.
#
# Builds tokenledger, then runs `tokenledger bench --suite standard` twice:
# refresh and issue at 1 and 64 callers, introspect at 64, and a family with
# 10 000 prior rotations against a fresh one, each next to the bare pipeline
# measured in the same run (embedded JetStream, file storage, temp dirs,
# callers on loopback TCP).
#
#   in-process  the service and the bare pipeline run inside the bench's
#               process, as in the reference figures, which hold server,
#               client and load in one process (--in-process);
#   processes   each runs as a child process, as deployed.
#
# Writes results-<mode>.json and table-<mode>.txt under $BENCH_OUT; takes
# about 3 minutes a mode.
#
#   scripts/bench.sh                      # both modes
#   BENCH_MODES=processes scripts/bench.sh
#   BENCH_PROFILE=1 scripts/bench.sh      # plus a CPU profile per case
#   scripts/bench.sh --duration 5s        # extra flags go to `tokenledger bench`
#
# Environment: BENCH_OUT (default a new directory under $TMPDIR),
# BENCH_MODES ("in-process processes"), BENCH_DURATION (10s), BENCH_WARMUP
# (2s), BENCH_PRIOR (10000 rotations), BENCH_TIMEOUT (15m a mode, a hard
# bound), BENCH_PROFILE.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${BENCH_OUT:-${TMPDIR:-/tmp}/tokenledger-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

for arg in "$@"; do
	case $arg in
	--nats-url*)
		echo "bench.sh measures a service it starts itself on loopback; run 'tokenledger bench --nats-url ...' directly to target another" >&2
		exit 2
		;;
	esac
done

echo "bench.sh: building" >&2
go build -o "$out/tokenledger" ./cmd/tokenledger

# Unset TOKENLEDGER_* settings meant for other commands.
unset TOKENLEDGER_NATS_URL
for mode in ${BENCH_MODES:-in-process processes}; do
	args=(bench --suite standard
		--duration "${BENCH_DURATION:-10s}" --warmup "${BENCH_WARMUP:-2s}"
		--prior-rotations "${BENCH_PRIOR:-10000}"
		--json-file "$out/results-$mode.json")
	case $mode in
	in-process) args+=(--in-process) ;;
	processes) ;;
	*)
		echo "bench.sh: unknown mode $mode (in-process, processes)" >&2
		exit 2
		;;
	esac
	if [[ -n ${BENCH_PROFILE:-} ]]; then
		args+=(--cpuprofile "$out/profiles-$mode")
	fi
	# Everything shares the machine's cores: other load skews every number
	# (ratios to the bare pipeline less so). Record it.
	{
		echo "mode: $mode"
		echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
		echo "uptime: $(uptime)"
		echo "command: tokenledger ${args[*]} $*"
	} | tee -a "$out/run.txt" >&2
	read -r load1 _ </proc/loadavg || load1=0
	if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
		echo "bench.sh: warning: load average $load1 before the run; other processes will skew the numbers" >&2
	fi
	timeout "${BENCH_TIMEOUT:-15m}" "$out/tokenledger" "${args[@]}" "$@" | tee "$out/table-$mode.txt"
done
echo "bench.sh: results in $out (results-<mode>.json, table-<mode>.txt, run.txt)" >&2
