#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, build, set up the
# shield hooks and the git gate, then launch one real hardened sandbox with
# default settings and show what it can and cannot do. Cleans up its task.
#
#   make demo          (or: scripts/demo.sh; either runs itself through sudo
#                       when not root)
#
# TEROK_DEMO_BIN_DIR=/usr/bin runs the installed binaries instead (make
# package-test does): nothing is installed or built, and the runner finds
# the hook beside itself or in ../libexec/terok (docs/install.md).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=as-root.sh
. "$top/scripts/as-root.sh"
cd "$top"
export PATH="/usr/local/go/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -n "${TEROK_DEMO_BIN_DIR:-}" ]; then
  ts=$TEROK_DEMO_BIN_DIR/terok-sandbox
  [ -x "$ts" ] || { echo "demo: $ts is not an executable" >&2; exit 1; }
  say "Using the binaries in $TEROK_DEMO_BIN_DIR"
else
  say "Installing dependencies and building"
  scripts/install-deps.sh
  make -s build
  ts=bin/terok-sandbox
fi

demo_dir=${TEROK_DEMO_DIR:-/var/tmp/terok-demo}
mkdir -p "$demo_dir"

say "Building a small local task image (no registry needed)"
tag=$(sha256sum test/build-image.sh | cut -c1-16)
image="localhost/terok-demo:$tag"
if ! podman image exists "$image"; then
  test/build-image.sh "$demo_dir/rootfs.tar"
  podman import -q "$demo_dir/rootfs.tar" "$image" >/dev/null
  rm -f "$demo_dir/rootfs.tar"
fi
echo "image: $image"

# Some hosts (like the VMs CI runs on) cannot run podman's defaults: crun
# fails on hybrid cgroups and the default rlimits need CAP_SYS_RESOURCE.
# Probe with the host's settings and fall back to the test containers.conf
# (runc, lowered ulimits) only when the probe fails.
if [ -z "${CONTAINERS_CONF:-}" ] && ! podman run --rm --network none "$image" true >/dev/null 2>&1; then
  export CONTAINERS_CONF="$top/test/containers.conf"
  echo "podman's defaults do not run on this host; using $CONTAINERS_CONF (runc, lowered ulimits; see docs/testing.md)"
fi

say "Installing the shield's global OCI hooks"
if [ "$(id -u)" -eq 0 ]; then $ts shield setup --root; else $ts shield setup --user; fi
$ts shield status

say "Creating the project's gate mirror and starting the gate"
upstream="$demo_dir/upstream"
if [ ! -d "$upstream/.git" ]; then
  git init -q -b main "$upstream"
  echo "Hello from the demo project, cloned through terok-gate." >"$upstream/README"
  git -C "$upstream" add README
  git -C "$upstream" -c user.name=demo -c user.email=demo@localhost commit -qm "initial commit"
fi
$ts gate sync --upstream "$upstream" demo 2>/dev/null
started_gate=no
if ! $ts gate ensure >/dev/null 2>&1; then
  $ts gate start
  started_gate=yes
fi
$ts gate status

name="demo-task-$(date +%s)"
task_dir="$demo_dir/tasks/$name"
token=$($ts gate token create demo "$name")
url=$($ts gate url --token "$token" demo)

# A host service that is NOT one of terok's ports: the shield must keep the
# container away from it even though it listens on the same loopback.
other_port=$($ts free-port)
socat TCP-LISTEN:"$other_port",bind=127.0.0.1,fork,reuseaddr SYSTEM:'echo host secret' &
socat_pid=$!

cleanup() {
  $ts stop "$name" >/dev/null 2>&1 || true
  $ts gate token revoke demo "$name" >/dev/null 2>&1 || true
  kill "$socat_pid" 2>/dev/null || true
  if [ "$started_gate" = yes ]; then $ts gate stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "Launching the sandbox (default settings: shield on, profile dev-standard)"
$ts run --name "$name" --image "$image" --task-dir "$task_dir" \
  -e CODE_REPO="$url" -e GIT_TERMINAL_PROMPT=0 -e OTHER_PORT="$other_port" -- sh -c '
    set -u
    git clone -q "$CODE_REPO" /workspace/repo && echo "clone through the gate: ok" && cat /workspace/repo/README
    grep NoNewPrivs /proc/self/status
    if nc -w 3 host.containers.internal "$OTHER_PORT" </dev/null >/dev/null 2>&1; then
      echo "UNEXPECTED: reached host port $OTHER_PORT"; exit 1
    else
      echo "host port $OTHER_PORT (not a terok service): refused by the shield"
    fi
    if nft flush ruleset 2>/dev/null; then echo "UNEXPECTED: nft flush worked"; exit 1; else echo "nft flush ruleset inside: refused"; fi
    echo ">> init complete"
    sleep 30'

say "Following the task's log until it is ready"
$ts logs --until-ready --timeout 60 "$name"

say "The live firewall of the running task"
$ts shield state "$name"
$ts shield rules "$name" | sed -n '1,25p'
echo "  …"
$ts shield log "$name" | tail -n 3

say "Stopping the task"
$ts stop "$name"
echo "The demo ran a hardened, firewalled sandbox end to end."
