#!/usr/bin/env bash
# idle-rss.sh [ROUNDS] — idle RSS of the gate, the credential proxy and the
# SSH agent with metrics off and on (docs/operations.md, Metrics): each
# daemon is started on loopback with its state in a temp dir, answers one
# health check (with metrics, one scrape), and VmRSS is read 3 s later.
# Binaries from $TEROK_BIN_DIR (default build/bin; make build).
set -euo pipefail
ROUNDS=${1:-3}
BIN=${TEROK_BIN_DIR:-$(dirname "$0")/../build/bin}
command -v sqlite3 >/dev/null || { echo "idle-rss: sqlite3 is needed (scripts/install-deps.sh)" >&2; exit 1; }
TOP=$(mktemp -d /tmp/terok-idle-rss.XXXXXX)
trap 'rm -rf "$TOP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

measure() { # daemon on|off -> KiB
	local W; W=$(mktemp -d "$TOP/w.XXXX")
	mkdir -p "$W/state" "$W/run" "$W/config" "$W/cred" "$W/gate"
	export TEROK_SANDBOX_STATE_DIR=$W/state TEROK_SANDBOX_RUNTIME_DIR=$W/run TEROK_SANDBOX_CONFIG_DIR=$W/config \
		TEROK_CREDENTIALS_DIR=$W/cred TEROK_CONFIG_DIR=$W/config
	local port mport pid extra=()
	port=$(free_port); mport=$(free_port)
	[ "$2" = on ] && extra=(--metrics-listen=127.0.0.1:$mport)
	case $1 in
	gate)
		"$BIN/terok-gate" --base-path="$W/gate" --token-file="$W/gate/tokens.json" --foreground --port="$port" \
			--audit-file=off --log-file="$W/log" "${extra[@]}" 2>"$W/err" &
		pid=$!
		for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/-/health" >/dev/null && break; sleep 0.05; done ;;
	proxy)
		sqlite3 "$W/cred/credentials.db" 'CREATE TABLE credentials (credential_set TEXT NOT NULL, provider TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (credential_set, provider)); CREATE TABLE proxy_tokens (token TEXT PRIMARY KEY, project TEXT NOT NULL, task TEXT NOT NULL, credential_set TEXT NOT NULL, provider TEXT NOT NULL);'
		echo '{"x": {"upstream": "http://127.0.0.1:9", "auth_header": "dynamic"}}' >"$W/cred/routes.json"
		"$BIN/terok-credential-proxy" --socket-path="$W/run/p.sock" --db-path="$W/cred/credentials.db" \
			--routes-file="$W/cred/routes.json" --port="$port" --log-level=WARNING --log-file="$W/log" --audit-file=off "${extra[@]}" 2>"$W/err" &
		pid=$!
		for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/-/health" >/dev/null && break; sleep 0.05; done ;;
	agent)
		"$BIN/terok-ssh-agent" --db-path="$W/cred/credentials.db" --ssh-keys-file="$W/cred/ssh-keys.json" --port="$port" \
			--audit-file=off --log-file="$W/log" "${extra[@]}" 2>"$W/err" &
		pid=$!
		for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done ;;
	esac
	if [ "$2" = on ]; then curl -fs "http://127.0.0.1:$mport/metrics" >/dev/null || { echo "idle-rss: $1 served no metrics" >&2; cat "$W/err" >&2; exit 1; }; fi
	sleep 3
	kill -0 "$pid" 2>/dev/null || { echo "idle-rss: $1 exited" >&2; cat "$W/err" >&2; exit 1; }
	awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"
	kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "== idle RSS, KiB (load: $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq "$ROUNDS"); do
	for d in gate proxy agent; do
		printf "round %s %-6s metrics off %6s  on %6s\n" "$r" "$d" "$(measure "$d" off)" "$(measure "$d" on)"
	done
done
