#!/usr/bin/env bash
# Runs inside the systemd container of scripts/systemd-test.sh (systemd is
# PID 1, the host's file system is the container's, read through an
# overlay): installs the package and exercises the system and user units
# under their hardening. Usage: systemd-test-guest.sh DEB
set -euo pipefail
deb=$1
fail() { echo "systemd-test: FAIL: $*" >&2; exit 1; }
say() { echo "systemd-test: $*"; }
dpkg -i "$deb" >/dev/null
systemctl daemon-reload

# A local upstream for the proxy: answers with the Authorization header it got.
cat >/tmp/upstream.sh <<'EOF'
#!/bin/bash
auth=
while IFS= read -r l; do l=${l%$'\r'}; [ -z "$l" ] && break; case $l in [Aa]uthorization:*) auth=${l#*: } ;; esac; done
b="auth=$auth"; printf 'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#b}" "$b"
EOF
chmod 755 /tmp/upstream.sh
systemd-run --quiet --unit terok-test-upstream socat TCP-LISTEN:18555,bind=127.0.0.1,reuseaddr,fork EXEC:/tmp/upstream.sh

# hardened PID: CapBnd 0, NoNewPrivs, seccomp filter, read-only root.
hardened() {
  local pid=$1 what=$2
  [ "$pid" != 0 ] || fail "$what: no main process"
  # Type=notify units are active after READY=1, so after the exec; the wait
  # remains for units of older installs (Type=simple is active at fork).
  for _ in $(seq 50); do [[ $(readlink /proc/$pid/exe) == */terok-* ]] && break; sleep 0.1; done
  grep -q '^CapBnd:[[:space:]]*0000000000000000$' /proc/$pid/status || fail "$what: capabilities left: $(grep CapBnd /proc/$pid/status)"
  grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/$pid/status || fail "$what: NoNewPrivs off"
  grep -q '^Seccomp:[[:space:]]*2$' /proc/$pid/status || fail "$what: no seccomp filter"
  awk '$5 == "/" {print $6}' /proc/$pid/mountinfo | grep -q '^ro' || fail "$what: / is writable"
}
# first byte after connecting to a cold socket, in ms
ttfb() { curl -sS -o /dev/null -m 10 -w '%{time_starttransfer}' "$@" | awk '{printf "%d", $1 * 1000}'; }

# --- system units, as root ------------------------------------------------
mkdir -p /tmp/up && git -C /tmp/up init -q -b main && git -C /tmp/up -c user.email=t@e -c user.name=t commit -q --allow-empty -m one
terok-sandbox gate sync --upstream /tmp/up proj >/dev/null 2>&1 || fail "gate sync"
tok=$(terok-sandbox gate token create proj t1)
url=$(terok-sandbox gate url --token "$tok" proj | sed 's/host.containers.internal/127.0.0.1/')
systemctl enable --now terok-gate.socket >/dev/null 2>&1
[ "$(systemctl is-active terok-gate.service)" = inactive ] || fail "gate service started before the first connection"
ms=$(ttfb "${url%.git}.git/info/refs?service=git-upload-pack")
say "system gate: cold socket to first answer ${ms} ms"
git clone -q "$url" /tmp/clone || fail "clone through the system gate"
git -C /tmp/clone -c user.email=t@e -c user.name=t commit -q --allow-empty -m two
git -C /tmp/clone push -q origin HEAD:refs/heads/task-1 || fail "push through the system gate"
pid=$(systemctl show -p MainPID --value terok-gate.service)
hardened "$pid" "system gate"
nsenter -t "$pid" -m sh -c 'touch /usr/terok-test' 2>/dev/null && fail "the gate can write /usr"
nsenter -t "$pid" -m sh -c 'touch /var/lib/terok/sandbox/gate/.w && rm /var/lib/terok/sandbox/gate/.w' || fail "the gate cannot write its base path"
systemctl restart terok-gate.service
git -C /tmp/clone fetch -q origin || fail "fetch after restart"
systemctl stop terok-gate.service terok-gate.socket
say "system gate: socket activation, clone, push, restart, stop ok"
# The hardened gate writes its audit records (docs/audit.md, Files, rotation, modes).
grep '"channel":"gate"' /var/lib/terok/sandbox/audit/gate.jsonl 2>/dev/null | grep -q '"event":"push"' ||
  fail "system gate wrote no push record: $(cat /var/lib/terok/sandbox/audit/gate.jsonl 2>&1)"
say "system gate: audit records under the hardening"

# Type=notify (docs/install.md, Socket activation and readiness): a start
# job ends only on READY=1, which the gate sends once its listener is up and
# tokens.json is readable. With the file unreadable (the service has no
# capabilities, so not even its root reads mode 000) the gate exits before
# READY: the start fails and the unit is never active. A Type=simple unit
# would report the start as done at fork.
[ "$(systemctl show -p Type --value terok-gate.service)" = notify ] || fail "gate service is not Type=notify"
tf=/var/lib/terok/sandbox/gate/tokens.json
[ -f "$tf" ] || fail "no $tf"
chmod 000 "$tf"
systemctl start terok-gate.service 2>/dev/null && fail "gate start succeeded without readable tokens"
[ "$(systemctl is-active terok-gate.service)" != active ] || fail "gate active without READY"
chmod 600 "$tf"
systemctl reset-failed terok-gate.service terok-gate.socket 2>/dev/null || true
systemctl start terok-gate.service || fail "gate start with readable tokens"
# The start job returned: READY=1 arrived, so the gate answers at once.
[ "$(systemctl is-active terok-gate.service)" = active ] || fail "gate not active after its start job"
git -C /tmp/clone fetch -q origin || fail "fetch right after READY"
systemctl stop terok-gate.service terok-gate.socket
say "system gate: Type=notify: no READY (unreadable tokens) fails the start; active only after READY=1"

cred=/var/lib/terok/credentials
mkdir -p "$cred" && chmod 700 "$cred"
echo '{"claude": {"upstream": "http://127.0.0.1:18555"}}' >"$cred/routes.json"
echo '{}' >"$cred/ssh-keys.json"
chmod 600 "$cred"/*.json
printf 'terok-systemd-test\n' >/tmp/pp
# The CLI runs like a login session: its session keyring links @u.
R="systemd-run --quiet --wait --pipe --collect -p KeyringMode=shared"
$R terok-sandbox credentials unlock --passphrase-file /tmp/pp --timeout 5m >/dev/null || fail "unlock"
echo -n sk-sealed-system | $R terok-sandbox credentials set --type api_key claude >/dev/null || fail "credentials set"
ptok=$(terok-sandbox proxy token create --provider claude proj t1)
systemctl enable --now terok-credential-proxy.socket >/dev/null 2>&1
ms=$(ttfb -H "Authorization: Bearer $ptok" http://127.0.0.1:18731/v1/x)
out=$(curl -sS -m 10 -H "Authorization: Bearer $ptok" http://127.0.0.1:18731/v1/x)
[ "$out" = "auth=Bearer sk-sealed-system" ] || fail "system proxy answered '$out'"
say "system proxy: cold socket to first answer ${ms} ms; sealed credential injected"
hardened "$(systemctl show -p MainPID --value terok-credential-proxy.service)" "system proxy"
[ "$(systemctl show -p Type --value terok-credential-proxy.service)" = notify ] || fail "proxy service is not Type=notify"
systemctl restart terok-credential-proxy.service
# restart returns after READY=1: the proxy is active and answers at once.
[ "$(systemctl is-active terok-credential-proxy.service)" = active ] || fail "proxy not active after its restart job"
[ "$(curl -sS -m 10 -H "Authorization: Bearer $ptok" http://127.0.0.1:18731/v1/x)" = "auth=Bearer sk-sealed-system" ] || fail "proxy after restart"
systemctl disable --now terok-credential-proxy.socket terok-credential-proxy.service >/dev/null 2>&1
# The hardened proxy writes its audit records (docs/audit.md, Files): one
# per request, never the secret; the stop flushed them.
af=/var/lib/terok/sandbox/audit/proxy.jsonl
[ "$(grep '"event":"request"' "$af" 2>/dev/null | grep -c '"outcome":"ok"')" -ge 3 ] || fail "system proxy audit records: $(cat "$af" 2>&1)"
grep -q sk-sealed-system "$af" && fail "secret in the proxy's audit file"
say "system proxy: audit records in $af under the hardening"

# The standalone agent (the proxy's child is gone with the proxy); it
# refuses to start while the store is locked, so before the lock.
systemctl enable --now terok-ssh-agent.socket >/dev/null 2>&1
t0=$(date +%s%N)
timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/18732' || fail "ssh agent socket"
for _ in $(seq 50); do [ "$(systemctl is-active terok-ssh-agent.service)" = active ] && break; sleep 0.1; done
say "system ssh agent: active $(( ($(date +%s%N) - t0) / 1000000 )) ms after the first connection"
hardened "$(systemctl show -p MainPID --value terok-ssh-agent.service)" "system ssh agent"
[ "$(systemctl show -p Type --value terok-ssh-agent.service)" = notify ] || fail "agent service is not Type=notify"
systemctl restart terok-ssh-agent.service
[ "$(systemctl is-active terok-ssh-agent.service)" = active ] || fail "agent not active after its restart job"
systemctl disable --now terok-ssh-agent.socket terok-ssh-agent.service >/dev/null 2>&1
$R terok-sandbox credentials lock >/dev/null

# --- user units -----------------------------------------------------------
id terok-systemd-test >/dev/null 2>&1 || useradd -m -s /bin/bash terok-systemd-test
uid=$(id -u terok-systemd-test)
loginctl enable-linger terok-systemd-test
for _ in $(seq 50); do [ -S /run/user/$uid/bus ] && break; sleep 0.1; done
U="runuser -u terok-systemd-test -- env XDG_RUNTIME_DIR=/run/user/$uid HOME=/home/terok-systemd-test"
$U bash -s <<EOF || fail "user units"
set -euo pipefail
fail() { echo "systemd-test: FAIL: \$*" >&2; exit 1; }
mkdir -p /tmp/uup && git -C /tmp/uup init -q -b main && git -C /tmp/uup -c user.email=t@e -c user.name=t commit -q --allow-empty -m one
terok-sandbox gate sync --upstream /tmp/uup proj >/dev/null 2>&1
tok=\$(terok-sandbox gate token create proj t1)
url=\$(terok-sandbox gate url --token "\$tok" proj | sed 's/host.containers.internal/127.0.0.1/')
systemctl --user enable --now terok-gate.socket >/dev/null 2>&1
git clone -q "\$url" /tmp/uclone || fail "clone through the user gate"
pid=\$(systemctl --user show -p MainPID --value terok-gate.service)
grep -q '^NoNewPrivs:[[:space:]]*1\$' /proc/\$pid/status && grep -q '^Seccomp:[[:space:]]*2\$' /proc/\$pid/status || fail "user gate not hardened"
awk '\$5 == "/" {print \$6}' /proc/\$pid/mountinfo | grep -q '^ro' || fail "user gate: / is writable"
systemctl --user disable --now terok-gate.socket terok-gate.service >/dev/null 2>&1
echo "systemd-test: user gate: socket activation, clone, hardening ok"
cred=\$HOME/.local/share/terok/credentials
mkdir -p "\$cred" && chmod 700 "\$cred"
echo '{"claude": {"upstream": "http://127.0.0.1:18555"}}' >"\$cred/routes.json"; echo '{}' >"\$cred/ssh-keys.json"; chmod 600 "\$cred"/*.json
printf 'terok-systemd-test\n' >/tmp/upp
R="systemd-run --user --quiet --wait --pipe --collect -p KeyringMode=shared"
\$R terok-sandbox credentials unlock --passphrase-file /tmp/upp --timeout 5m >/dev/null
echo -n sk-sealed-user | \$R terok-sandbox credentials set --type api_key claude >/dev/null
ptok=\$(terok-sandbox proxy token create --provider claude proj t1)
systemctl --user enable --now terok-credential-proxy.socket >/dev/null 2>&1
out=\$(curl -sS -m 10 -H "Authorization: Bearer \$ptok" --unix-socket /run/user/$uid/terok/sandbox/credential-proxy.sock http://p/v1/x)
[ "\$out" = "auth=Bearer sk-sealed-user" ] || fail "user proxy answered '\$out'"
pid=\$(systemctl --user show -p MainPID --value terok-credential-proxy.service)
grep -q '^CapBnd:[[:space:]]*0000000000000000\$' /proc/\$pid/status || fail "user proxy keeps capabilities"
systemctl --user disable --now terok-credential-proxy.socket terok-credential-proxy.service >/dev/null 2>&1
grep '"event":"request"' \$HOME/.local/share/terok/sandbox/audit/proxy.jsonl | grep -q '"outcome":"ok"' || fail "user proxy wrote no audit record"
\$R terok-sandbox credentials lock >/dev/null
echo "systemd-test: user proxy: socket activation, sealed credential injected, hardening ok"
EOF
loginctl disable-linger terok-systemd-test

dpkg -r terok-sandbox >/dev/null
for d in /usr/lib/systemd/system /usr/lib/systemd/user; do
  ls "$d" | grep -q terok- && fail "units left in $d after dpkg -r"
done
say "guest ok"
