#!/usr/bin/env bash
# bench.sh: the standard performance suite of issue 6 on this machine.
#
# Builds tokenledger, then `tokenledger bench --suite standard`: the service
# (embedded JetStream, file storage, temp dir) and the bare pipeline each run
# as a child process on a random loopback port; refresh and issue at 1 and 64
# callers, introspect at 64, and a family with 10 000 prior rotations against
# a fresh one, each next to the bare pipeline measured in the same run.
# Writes results.json and table.txt under $BENCH_OUT; takes about 3 minutes.
#
#   scripts/bench.sh                      # the standard suite
#   BENCH_PROFILE=1 scripts/bench.sh      # plus a CPU profile per case
#   scripts/bench.sh --duration 5s        # extra flags go to `tokenledger bench`
#
# Environment: BENCH_OUT (default a new directory under $TMPDIR),
# BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_PRIOR (10000 rotations),
# BENCH_TIMEOUT (15m, a hard bound on the whole run), BENCH_PROFILE.
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

args=(bench --suite standard
	--duration "${BENCH_DURATION:-10s}" --warmup "${BENCH_WARMUP:-2s}"
	--prior-rotations "${BENCH_PRIOR:-10000}"
	--json-file "$out/results.json")
if [[ -n ${BENCH_PROFILE:-} ]]; then
	args+=(--cpuprofile "$out/profiles")
fi

# Everything shares the machine's cores: other load skews every number
# (ratios to the bare pipeline less so). Record it.
{
	echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
	echo "uptime: $(uptime)"
	echo "command: tokenledger ${args[*]} $*"
} | tee "$out/run.txt" >&2
read -r load1 _ </proc/loadavg || load1=0
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
	echo "bench.sh: warning: load average $load1 before the run; other processes will skew the numbers" >&2
fi

# Unset TOKENLEDGER_* settings meant for other commands.
unset TOKENLEDGER_NATS_URL
timeout "${BENCH_TIMEOUT:-15m}" "$out/tokenledger" "${args[@]}" "$@" | tee "$out/table.txt"
echo "bench.sh: results in $out (results.json, table.txt)" >&2
