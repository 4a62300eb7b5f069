#!/usr/bin/env bash
# make package-test (docs/install.md, The package): builds the .deb,
# installs it with dpkg -i, runs the installed binaries from their installed
# paths and the demo (scripts/demo.sh) with them, removes it with dpkg -r and checks that nothing of ours is left
# outside the state directory. Every root the binaries read or write is a
# temporary directory, so the host's own terok state is never touched.
set -euo pipefail
# shellcheck source=as-root.sh
. "$(cd "$(dirname "$0")" && pwd)/as-root.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
pkg=terok-sandbox
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
  fail "$pkg is already installed on this machine; the test would remove it (dpkg -r $pkg first)"
fi
mapfile -t built < <(flock /tmp/terok-build.lock scripts/package.sh "$top/build")
deb=${built[0]:-} rpmfile=${built[1]:-}
[ -f "$deb" ] && [ -f "$rpmfile" ] || fail "scripts/package.sh did not build both packages: ${built[*]}"
# The .rpm is only read here (this is a Debian machine): its metadata, its
# digests, its dependencies and that it carries the .deb's files.
if command -v rpm >/dev/null; then
  rpm -K --nosignature "$rpmfile" | grep -q 'digests OK' || fail "rpm -K: $(rpm -K --nosignature "$rpmfile" 2>&1)"
  [ "$(rpm -qp --qf '%{NAME} %{VERSION} %{LICENSE}' "$rpmfile")" = "$pkg $(dpkg-deb -f "$deb" Version) Apache-2.0" ] ||
    fail "rpm -qip: $(rpm -qip "$rpmfile" 2>&1 | head -5)"
  for dep in 'podman >= 4.3' nftables git-core 'glibc >= 2.34'; do
    rpm -qp --requires "$rpmfile" | grep -qxF "$dep" || fail "the rpm does not require $dep"
  done
  debfiles=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print substr($6, 2)}' | sort)
  rpmfiles=$(rpm -qlvp "$rpmfile" | awk '$1 !~ /^d/ {print $NF}' | grep -vxF /usr/share/zsh/site-functions/_terok-sandbox | sort)
  [ "$debfiles" = "$rpmfiles" ] || fail "the rpm's files differ from the deb's: $(diff <(echo "$debfiles") <(echo "$rpmfiles") | tr '\n' ' ')"
  echo "package-test: $(basename "$rpmfile"), $(stat -c %s "$rpmfile") bytes, same files as the deb"
else
  echo "package-test: rpm not installed; the .rpm was only built (nfpm)"
fi
# The installed binaries are briefly on everyone's PATH: only while no
# end-to-end test runs (they take the same lock).
exec 9>>/tmp/terok-e2e.lock
flock 9
echo "package-test: $(basename "$deb"), $(stat -c %s "$deb") bytes"
version=$(dpkg-deb -f "$deb" Version)
# The package's own paths; none of its files may exist before (the test
# would otherwise replace and then delete someone else's file).
mapfile -t paths < <(dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' | sed 's|/$||' | grep -v '^$')
for p in "${paths[@]}"; do
  if [ -e "$p" ] && [ ! -d "$p" ]; then fail "$p exists before the install"; fi
done
ours() { find /usr /etc /var/lib/dpkg/info -xdev -name '*terok*' 2>/dev/null | sort; }
before=$(ours)

tmp=$(mktemp -d)
cleanup() {
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok'; then dpkg -r "$pkg" >/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
# Every root in a temporary directory (docs/config.md, Base directories).
run() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$tmp/home" \
    TEROK_SANDBOX_STATE_DIR="$tmp/state" TEROK_SANDBOX_RUNTIME_DIR="$tmp/run" \
    TEROK_SANDBOX_CONFIG_DIR="$tmp/config" TEROK_CREDENTIALS_DIR="$tmp/credentials" \
    TEROK_CONFIG_DIR="$tmp/umbrella" "$@"
}
mkdir -p "$tmp/home"

dpkg -i "$deb" >/dev/null
[ "$(command -v terok-sandbox)" = /usr/bin/terok-sandbox ] || fail "terok-sandbox is not /usr/bin/terok-sandbox on PATH"

out=$(run /usr/bin/terok-sandbox --version)
# The binary carries the package's version (+dirty and all).
[ "$out" = "terok-sandbox $version" ] || fail "--version says '$out', the package is $version"
for d in terok-gate terok-credential-proxy terok-ssh-agent; do
  out=$(run "/usr/bin/$d" --version 2>&1) || true
  [ "$out" = "$d $version" ] || fail "/usr/bin/$d --version says '$out'"
done
v=$(run /usr/libexec/terok/terok-shield-hook --bundle-version)
[[ $v =~ ^[0-9]+$ ]] || fail "the installed hook reports bundle version '$v'"

# doctor reports (exit 0 ok, 1 warnings, 2 errors: nothing is set up here);
# anything else means it did not run.
set +e
out=$(run timeout 60 /usr/bin/terok-sandbox doctor 2>&1)
rc=$?
set -e
case $rc in 0 | 1 | 2) ;; *) fail "doctor exited $rc: $out" ;; esac
grep -q 'Shield state' <<<"$out" || fail "doctor printed no report: $out"

# The runner finds the hook in /usr/libexec/terok, and shield setup names
# it in the descriptors (in the temporary home: --user).
run /usr/bin/terok-sandbox shield setup --user >/dev/null 2>&1 || true
desc="$tmp/home/.local/share/containers/oci/hooks.d/terok-shield-createRuntime.json"
grep -q '"path": "/usr/libexec/terok/terok-shield-hook"' "$desc" || fail "the descriptor does not name the installed hook: $(cat "$desc" 2>&1)"
grep -q '"timeout": ' "$desc" || fail "the descriptor has no timeout"

# The demo with the installed binaries (docs/install.md, The package): a real
# sandbox, shielded, cloning through the gate. Its state is in the temporary
# roots; its root hook descriptors are removed again below unless they were
# there before (podman 4.3 reads only the global hooks directory).
hooks=/usr/share/containers/oci/hooks.d
hooks_before=$(ls "$hooks"/*terok* 2>/dev/null || true)
[ -d "$hooks" ] && hooks_dir_existed=yes || hooks_dir_existed=no
demo_env=(TEROK_DEMO_BIN_DIR=/usr/bin TEROK_DEMO_DIR="$tmp/demo")
[ -n "${CONTAINERS_CONF:-}" ] && demo_env+=(CONTAINERS_CONF="$CONTAINERS_CONF")
set +e
demo_out=$(run env "${demo_env[@]}" timeout 300 "$top/scripts/demo.sh" 2>&1)
rc=$?
set -e
if [ -z "$hooks_before" ]; then
  rm -f "$hooks"/terok-shield-*.json
  if [ "$hooks_dir_existed" = no ]; then rmdir "$hooks" 2>/dev/null || true; fi
fi
[ "$rc" -eq 0 ] || fail "the demo with the installed binaries exited $rc: $demo_out"
grep -q 'clone through the gate: ok' <<<"$demo_out" || fail "the demo did not clone through the gate: $demo_out"
grep -q 'refused by the shield' <<<"$demo_out" || fail "the demo's shield did not refuse the host port: $demo_out"
grep -q 'ran a hardened, firewalled sandbox end to end' <<<"$demo_out" || fail "the demo did not finish: $demo_out"
echo "package-test: the demo ran with the installed binaries"

man -w terok-sandbox >/dev/null || fail "man cannot find terok-sandbox(1)"
for p in terok-gate terok-credential-proxy terok-ssh-agent terok-shield-hook; do
  man -w 8 "$p" >/dev/null || fail "man cannot find $p(8)"
  man 8 "$p" 2>&1 >/dev/null | grep . && fail "man $p(8) warned"
done
bash --norc -c '. /usr/share/bash-completion/completions/terok-sandbox && complete -p terok-sandbox' >/dev/null || fail "bash completion"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /usr/lib/systemd/system/terok-*.socket /usr/lib/systemd/system/terok-*.service 2>&1 | grep terok- && fail "systemd-analyze verify: system units"
  XDG_RUNTIME_DIR=$tmp systemd-analyze verify --user /usr/lib/systemd/user/terok-*.socket /usr/lib/systemd/user/terok-*.service 2>&1 | grep terok- && fail "systemd-analyze verify: user units"
fi

dpkg -r "$pkg" >/dev/null
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok'; then
  fail "dpkg -r left the package in state '$(dpkg-query -W -f='${Status}' "$pkg")'"
fi
for p in "${paths[@]}"; do
  if [ -e "$p" ] && { [ ! -d "$p" ] || [[ $p == *terok* ]]; }; then fail "$p is left after dpkg -r"; fi
done
after=$(ours)
[ "$before" = "$after" ] || fail "left outside the state directory: $(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ' ')"
echo "package-test: ok ($pkg $version installed, run and removed cleanly)"
