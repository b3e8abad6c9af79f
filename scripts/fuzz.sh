#!/usr/bin/env bash
# fuzz.sh: runs every fuzz target of the project for a while each.
#   scripts/fuzz.sh            # 30s per target
#   FUZZTIME=5m scripts/fuzz.sh
# A failing input is written under the package's testdata/fuzz/ and then
# runs with the normal tests: fix the code, keep the input.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
	pkg=./$(dirname "${file#./}")
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		echo "--- $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
