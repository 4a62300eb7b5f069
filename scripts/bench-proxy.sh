#!/usr/bin/env bash
# Credential proxy benchmarks (docs/credential-proxy.md "Measurements").
# Compares, in one run on this machine (load generator, upstream and proxy
# share the CPUs):
#   1. small JSON, 64 keep-alive clients (wrk): proxy vs a bare
#      httputil.ReverseProxy (target >= 0.9x) and vs direct;
#   2. one client, sequential requests: added p50 latency over direct
#      (target <= 0.4 ms);
#   3. a 100 MB streamed response: proxy vs direct (target >= 0.8x);
#   4. idle RSS of the proxy (target <= 15 MiB);
#   5. audit records on vs off (issue 13): a second proxy writing its audit
#      file, throughput and p50 interleaved with the first (target >= 0.95x);
#   6. nginx as a reverse proxy in front of the same upstream (2 workers,
#      keep-alive to the upstream, the header set as ours sets it), when
#      nginx is installed (apt-get install nginx-light); skipped loudly
#      otherwise. No target: a reference point (issue 13).
# Traffic stays on 127.0.0.1. Usage: scripts/bench-proxy.sh [DURATION_S]
set -euo pipefail

DUR=${1:-${BENCH_DURATION:-10}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${TEROK_BIN_DIR:-$ROOT/bin}
WORK=$(mktemp -d /tmp/terok-bench-proxy.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk curl sqlite3 go; do
	command -v "$tool" >/dev/null || { echo "bench-proxy: $tool is required" >&2; exit 1; }
done

PROXY=$BIN_DIR/terok-credential-proxy
if [ ! -x "$PROXY" ]; then
	PROXY=$WORK/terok-credential-proxy
	(cd "$ROOT/credproxy" && go build -trimpath -o "$PROXY" ./cmd/terok-credential-proxy)
fi
(cd "$ROOT/credproxy" && go build -trimpath -o "$WORK/benchserver" ./internal/benchserver)

start_fixture() { # name mode args... ; the address lands in $WORK/<name>.addr
	local out=$WORK/$1.addr
	shift
	"$WORK/benchserver" -mode "$@" >"$out" 2>>"$WORK/fixtures.log" &
	PIDS+=($!)
	for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
	[ -s "$out" ] || { echo "bench-proxy: fixture $1 did not start" >&2; exit 1; }
}

start_fixture up upstream
UP=$(head -1 "$WORK/up.addr")
start_fixture bare bare -upstream "http://$UP"
BARE_PID=${PIDS[-1]}
BARE=$(head -1 "$WORK/bare.addr")
start_fixture bared bare-default -upstream "http://$UP"
BARED=$(head -1 "$WORK/bared.addr")

# Database and routes exactly as the spec describes them (raw SQL and JSON).
mkdir -p "$WORK/cred" "$WORK/run"
TOKEN=terok-p-0123456789abcdef0123456789abcdef
sqlite3 "$WORK/cred/credentials.db" <<SQL
CREATE TABLE IF NOT EXISTS credentials (credential_set TEXT NOT NULL, provider TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (credential_set, provider));
CREATE TABLE IF NOT EXISTS proxy_tokens (token TEXT PRIMARY KEY, project TEXT NOT NULL, task TEXT NOT NULL, credential_set TEXT NOT NULL, provider TEXT NOT NULL);
INSERT INTO credentials VALUES ('default', 'bench', '{"type": "api_key", "key": "bench-real-secret"}');
INSERT INTO proxy_tokens VALUES ('$TOKEN', 'bench', 'task', 'default', 'bench');
SQL
printf '{"bench": {"upstream": "http://%s", "auth_header": "dynamic"}}\n' "$UP" >"$WORK/cred/routes.json"
# No default state path: the proxies' roots are in $WORK.
export TEROK_SANDBOX_STATE_DIR=$WORK/state TEROK_SANDBOX_RUNTIME_DIR=$WORK/run TEROK_SANDBOX_CONFIG_DIR=$WORK/config \
	TEROK_CREDENTIALS_DIR=$WORK/cred TEROK_CONFIG_DIR=$WORK/config
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo "$1"; }
start_proxy() { # name port audit-file
	"$PROXY" --socket-path="$WORK/run/$1.sock" --db-path="$WORK/cred/credentials.db" \
		--routes-file="$WORK/cred/routes.json" --port="$2" --log-level=WARNING --log-file="$WORK/$1.log" --audit-file="$3" 2>>"$WORK/$1.stderr" &
	PIDS+=($!)
	for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/-/health" >/dev/null && break; sleep 0.05; done
}
PPORT=$(free_port 28731)
start_proxy proxy "$PPORT" off
PROXY_PID=${PIDS[-1]}
PROXY_URL=127.0.0.1:$PPORT
APORT=$(free_port 28733)
AUDIT_FILE=$WORK/state/audit/proxy.jsonl
start_proxy audited "$APORT" "$AUDIT_FILE"
AUDITED_PID=${PIDS[-1]}
AUDITED_URL=127.0.0.1:$APORT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
IDLE_FRESH=$(rss_kib "$PROXY_PID")

# wrk_run URL [HEADER] -> "<requests/s> <requests>"
wrk_run() {
	local args=(-t2 -c64 -d"${DUR}s" "$1")
	[ $# -gt 1 ] && args=(-H "$2" "${args[@]}")
	wrk "${args[@]}" | awk '/requests in/ {n=$1} /^Requests\/sec:/ {r=$2} END {print r, n}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
p50_ms() { # url [header]
	local args=(-t1 -c1 -d"$((DUR / 2 > 2 ? DUR / 2 : 2))s" --latency "$1")
	[ $# -gt 1 ] && args=(-H "$2" "${args[@]}")
	wrk "${args[@]}" | awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}'
}
mbps() { # url [header] -> best of 3 in MB/s
	local best=0 s
	for _ in 1 2 3; do
		if [ $# -gt 1 ]; then s=$(curl -s -o /dev/null -H "$2" -w '%{speed_download}' "$1"); else s=$(curl -s -o /dev/null -w '%{speed_download}' "$1"); fi
		best=$(awk -v a="$best" -v b="$s" 'BEGIN {print (b > a) ? b : a}')
	done
	awk -v b="$best" 'BEGIN {printf "%.1f", b / 1048576}'
}

AUTH="Authorization: Bearer $TOKEN"
# Warm-up (pools, page cache).
wrk -t1 -c8 -d2s -H "$AUTH" "http://$PROXY_URL/json" >/dev/null
wrk -t1 -c8 -d2s "http://$BARE/json" >/dev/null
wrk -t1 -c8 -d2s "http://$BARED/json" >/dev/null

echo "== small JSON, 64 keep-alive clients, ${DUR}s per run (wrk -t2 -c64), ${ROUNDS:=3} interleaved rounds, best of each"
DIRECT_RPS=0 BARE_RPS=0 BARED_RPS=0 PROXY_RPS=0 BARE_CPU=0 PROXY_CPU=0 BARE_N=0 PROXY_N=0
best() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a) ? b : a}'; }
for _ in $(seq "$ROUNDS"); do
	read -r r _ < <(wrk_run "http://$UP/json"); DIRECT_RPS=$(best "$DIRECT_RPS" "$r")
	t0=$(cpu_ticks "$BARE_PID"); read -r r n < <(wrk_run "http://$BARE/json"); t1=$(cpu_ticks "$BARE_PID")
	BARE_RPS=$(best "$BARE_RPS" "$r"); BARE_CPU=$((BARE_CPU + t1 - t0)); BARE_N=$((BARE_N + n))
	read -r r _ < <(wrk_run "http://$BARED/json"); BARED_RPS=$(best "$BARED_RPS" "$r")
	t0=$(cpu_ticks "$PROXY_PID"); read -r r n < <(wrk_run "http://$PROXY_URL/json" "$AUTH"); t1=$(cpu_ticks "$PROXY_PID")
	PROXY_RPS=$(best "$PROXY_RPS" "$r"); PROXY_CPU=$((PROXY_CPU + t1 - t0)); PROXY_N=$((PROXY_N + n))
done
awk -v d="$DIRECT_RPS" -v b="$BARE_RPS" -v bd="$BARED_RPS" -v p="$PROXY_RPS" -v bc="$BARE_CPU" -v pc="$PROXY_CPU" -v bn="$BARE_N" -v pn="$PROXY_N" -v us="$TICK_US" 'BEGIN {
	printf "direct         %10.0f req/s\n", d
	printf "bare revproxy  %10.0f req/s  (%.2fx direct)  %.1f us CPU/request in the proxy process\n", b, b / d, bc * us / bn
	printf "bare, default  %10.0f req/s  (%.2fx direct; ReverseProxy without a buffer pool, the floor as issue 4 names it)\n", bd, bd / d
	printf "credproxy      %10.0f req/s  (%.2fx bare, target >= 0.90; %.2fx default bare; %.2fx direct)  %.1f us CPU/request (%.2fx bare)\n", p, p / b, p / bd, p / d, pc * us / pn, (pc / pn) / (bc / bn) }'

echo "== one client, sequential requests: p50 latency"
D50=$(p50_ms "http://$UP/json")
B50=$(p50_ms "http://$BARE/json")
P50=$(p50_ms "http://$PROXY_URL/json" "$AUTH")
awk -v d="$D50" -v b="$B50" -v p="$P50" 'BEGIN {
	printf "direct p50 %.3f ms, bare p50 %.3f ms, credproxy p50 %.3f ms\n", d, b, p
	printf "added p50 over direct: %.3f ms (target <= 0.4 ms); bare adds %.3f ms\n", p - d, b - d }'

echo "== 100 MB streamed response (curl, best of 3)"
DIRECT_MB=$(mbps "http://$UP/big?mb=100")
BARE_MB=$(mbps "http://$BARE/big?mb=100")
PROXY_MB=$(mbps "http://$PROXY_URL/big?mb=100" "$AUTH")
awk -v d="$DIRECT_MB" -v b="$BARE_MB" -v p="$PROXY_MB" 'BEGIN {
	printf "direct %.1f MB/s, bare revproxy %.1f MB/s (%.2fx direct), credproxy %.1f MB/s (%.2fx direct, target >= 0.80; %.2fx bare)\n", d, b, b / d, p, p / d, p / b }'

echo "== audit records on vs off: small JSON, wrk -t2 -c64, ${DUR}s per run, $ROUNDS interleaved rounds, best of each"
wrk -t1 -c8 -d2s -H "$AUTH" "http://$AUDITED_URL/json" >/dev/null
OFF_RPS=0 ON_RPS=0 OFF_CPU=0 ON_CPU=0 OFF_N=0 ON_N=0
for _ in $(seq "$ROUNDS"); do
	t0=$(cpu_ticks "$PROXY_PID"); read -r r n < <(wrk_run "http://$PROXY_URL/json" "$AUTH"); t1=$(cpu_ticks "$PROXY_PID")
	OFF_RPS=$(best "$OFF_RPS" "$r"); OFF_CPU=$((OFF_CPU + t1 - t0)); OFF_N=$((OFF_N + n))
	t0=$(cpu_ticks "$AUDITED_PID"); read -r r n < <(wrk_run "http://$AUDITED_URL/json" "$AUTH"); t1=$(cpu_ticks "$AUDITED_PID")
	ON_RPS=$(best "$ON_RPS" "$r"); ON_CPU=$((ON_CPU + t1 - t0)); ON_N=$((ON_N + n))
done
OFF50=$(p50_ms "http://$PROXY_URL/json" "$AUTH")
ON50=$(p50_ms "http://$AUDITED_URL/json" "$AUTH")
RECORDS=$(wc -l <"$AUDIT_FILE")
awk -v f="$OFF_RPS" -v o="$ON_RPS" -v fc="$OFF_CPU" -v oc="$ON_CPU" -v fn="$OFF_N" -v on="$ON_N" -v us="$TICK_US" -v f50="$OFF50" -v o50="$ON50" -v rec="$RECORDS" 'BEGIN {
	printf "audit off %10.0f req/s  %.1f us CPU/request  p50 %.3f ms\n", f, fc * us / fn, f50
	printf "audit on  %10.0f req/s  %.1f us CPU/request  p50 %.3f ms  (%.2fx off, target >= 0.95; p50 %+.3f ms; %d records written)\n", o, oc * us / on, o50, o / f, o50 - f50, rec }'
if grep -q bench-real-secret "$AUDIT_FILE"; then
	echo "bench-proxy: the real secret appeared in the audit file" >&2
	exit 1
fi

echo "== nginx as a reverse proxy (2 workers, keep-alive upstream): small JSON, wrk -t2 -c64, ${DUR}s per run, $ROUNDS interleaved rounds, best of each"
if command -v nginx >/dev/null; then
	NPORT=$(free_port 28735)
	mkdir -p "$WORK/nginx/logs"
	# Everything under $WORK: own pid file, logs and temp paths, nothing of
	# the host's nginx configuration is read.
	cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $WORK/nginx/body;
	proxy_temp_path $WORK/nginx/proxy;
	upstream up { server $UP; keepalive 64; }
	server {
		listen 127.0.0.1:$NPORT;
		location / {
			proxy_pass http://up;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Authorization "Bearer bench-real-secret";
			proxy_buffering off;
		}
	}
}
NGINX
	nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx/logs/stderr" &
	NGINX_PID=$!
	PIDS+=($NGINX_PID)
	for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$NPORT/json" && break; sleep 0.05; done
	wrk -t1 -c8 -d2s "http://127.0.0.1:$NPORT/json" >/dev/null
	nginx_cpu() { local t=0 p; for p in $(pgrep -P "$NGINX_PID") "$NGINX_PID"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
	NG_RPS=0 US_RPS=0 NG_CPU=0 US_CPU=0 NG_N=0 US_N=0
	for _ in $(seq "$ROUNDS"); do
		t0=$(nginx_cpu); read -r r n < <(wrk_run "http://127.0.0.1:$NPORT/json"); t1=$(nginx_cpu)
		NG_RPS=$(best "$NG_RPS" "$r"); NG_CPU=$((NG_CPU + t1 - t0)); NG_N=$((NG_N + n))
		t0=$(cpu_ticks "$PROXY_PID"); read -r r n < <(wrk_run "http://$PROXY_URL/json" "$AUTH"); t1=$(cpu_ticks "$PROXY_PID")
		US_RPS=$(best "$US_RPS" "$r"); US_CPU=$((US_CPU + t1 - t0)); US_N=$((US_N + n))
	done
	NG50=$(p50_ms "http://127.0.0.1:$NPORT/json")
	US50=$(p50_ms "http://$PROXY_URL/json" "$AUTH")
	awk -v g="$NG_RPS" -v u="$US_RPS" -v gc="$NG_CPU" -v uc="$US_CPU" -v gn="$NG_N" -v un="$US_N" -v us="$TICK_US" -v g50="$NG50" -v u50="$US50" 'BEGIN {
		printf "nginx     %10.0f req/s  %.1f us CPU/request  p50 %.3f ms\n", g, gc * us / gn, g50
		printf "credproxy %10.0f req/s  %.1f us CPU/request  p50 %.3f ms  (%.2fx nginx)\n", u, uc * us / un, u50, u / g }'
else
	echo "bench-proxy: nginx comparison SKIPPED: nginx is not installed (apt-get install nginx-light)"
fi

sleep 2
BUSY_AFTER=$(rss_kib "$PROXY_PID")
# Idle: pooled upstream connections retire after 30 s, then the proxy
# returns its freed memory to the OS.
sleep "${BENCH_IDLE_WAIT:-40}"
IDLE_AFTER=$(rss_kib "$PROXY_PID")
awk -v a="$IDLE_FRESH" -v c="$BUSY_AFTER" -v b="$IDLE_AFTER" 'BEGIN {
	printf "== RSS: %.1f MiB idle after start, %.1f MiB right after the load, %.1f MiB idle after the load (target <= 15 MiB)\n", a / 1024, c / 1024, b / 1024 }'
if grep -q bench-real-secret "$WORK/proxy.log" "$WORK/audited.log"; then
	echo "bench-proxy: the real secret appeared in the proxy log" >&2
	exit 1
fi
