#!/usr/bin/env bash
# Runs every fuzz target of the given modules for $FUZZTIME each.
#
# `go test -fuzz` sometimes ends a run that found nothing with "context
# deadline exceeded" when -fuzztime expires while a worker is busy (a
# toolchain flake, not a finding). Such a run is repeated (twice at most); a real
# finding always writes a failing input, and that fails at once.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
# Minimising every new interesting input may take up to the default 60 s,
# which eats a short run (a target then reports a handful of executions and
# ends in the deadline flake below). A failing input is still written, just
# less minimised.
FUZZMINTIME=${FUZZMINTIME:-1s}
top=$(cd "$(dirname "$0")/.." && pwd)
count=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

fuzz_once() { # dir pkg name
  (cd "$1" && "$GO" test -run '^$' -fuzz "^${3}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINTIME" "$2") 2>&1 | tee "$log"
  return "${PIPESTATUS[0]}"
}

for m in "$@"; do
  while IFS=: read -r file name; do
    pkg=./$(dirname "${file#"$top/$m/"}")
    echo "== fuzz $m $pkg $name ($FUZZTIME)"
    tries=0
    until fuzz_once "$top/$m" "$pkg" "$name"; do
      tries=$((tries + 1))
      if grep -q 'Failing input written to' "$log" || ! grep -q 'context deadline exceeded' "$log" || [ "$tries" -gt 2 ]; then
        echo "fuzz: $m $pkg $name FAILED" >&2
        exit 1
      fi
      echo "== fuzz $m $pkg $name: deadline flake without a finding, running it again ($tries)"
    done
    count=$((count + 1))
  done < <(grep -rHo --include='*_test.go' -E '^func (Fuzz[A-Za-z0-9_]+)' "$top/$m" | sed -E 's/:func /:/' | sort -u)
done
echo "fuzz: $count targets run"
