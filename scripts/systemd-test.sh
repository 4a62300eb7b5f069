#!/usr/bin/env bash
# make systemd-test (docs/install.md, Hardening of the units; docs/testing.md): proves the
# package's units under a real systemd. Boots systemd as PID 1 in a rootful
# podman container whose root is this host's own file system through an
# overlay (--rootfs /:O: nothing it writes reaches the host), installs the
# .deb there and runs scripts/systemd-test-guest.sh: system and user units
# start on the first connection, a clone/push and a proxied request with a
# sealed credential work under the hardening, restart and stop work, and
# dpkg -r removes the units. Skips, saying why, where podman cannot run such
# a container.
set -euo pipefail
# shellcheck source=as-root.sh
. "$(cd "$(dirname "$0")" && pwd)/as-root.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$top/test/containers.conf}

# package.sh prints the .deb's path first, then the .rpm's.
deb=$(flock /tmp/terok-build.lock scripts/package.sh "$top/build" | sed -n 1p)
exec 9>>/tmp/terok-e2e.lock
flock 9
name=terok-systemd-test-$$
trap 'podman rm -f -t 0 "$name" >/dev/null 2>&1 || true' EXIT

# SYS_ADMIN: without it systemd skips the namespace-based hardening
# silently. seccomp=unconfined: podman's default profile refuses keyctl,
# which the encrypted store's key cache needs. The tmpfs mounts skip
# podman's copy-up of the host's busy /tmp and /run. They also hide a
# checkout that lives under /tmp (CI clones anywhere), so the checkout is
# bind-mounted read-only at a fixed path of its own.
src=/mnt/terok-systemd-test-src
if ! out=$(podman run -d --name "$name" --systemd=always --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
  -v "$top:$src:ro" --tmpfs /tmp:rw,notmpcopyup --tmpfs /run:rw,notmpcopyup --tmpfs /run/lock:rw,notmpcopyup \
  --tmpfs /var/log/journal:rw,notmpcopyup --rootfs /:O /lib/systemd/systemd 2>&1); then
  echo "systemd-test: SKIP: podman cannot run a systemd container here: $out"
  exit 0
fi
state=
for _ in $(seq 120); do
  state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  sleep 0.25
done
case $state in
  running | degraded) ;;
  *) echo "systemd-test: SKIP: systemd in the container did not come up (state '$state')"; exit 0 ;;
esac
[ "$state" = running ] || podman exec "$name" systemctl --failed --no-pager || true
start=$(date +%s)
podman exec "$name" "$src/scripts/systemd-test-guest.sh" "$src/${deb#"$top"/}"
echo "systemd-test: ok ($(basename "$deb"), $(( $(date +%s) - start )) s in the container)"
