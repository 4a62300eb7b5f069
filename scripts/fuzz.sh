#!/usr/bin/env bash
# Runs every fuzz target of the given modules for $FUZZTIME each.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
top=$(cd "$(dirname "$0")/.." && pwd)
count=0
for m in "$@"; do
  while IFS=: read -r file name; do
    pkg=./$(dirname "${file#"$top/$m/"}")
    echo "== fuzz $m $pkg $name ($FUZZTIME)"
    (cd "$top/$m" && "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg")
    count=$((count + 1))
  done < <(grep -rHo --include='*_test.go' -E '^func (Fuzz[A-Za-z0-9_]+)' "$top/$m" | sed -E 's/:func /:/' | sort -u)
done
echo "fuzz: $count targets run"
