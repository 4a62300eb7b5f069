#!/usr/bin/env bash
# Installs everything the build and the whole test suite need on a fresh
# Debian 12 machine (run as root). Idempotent: a second run only checks.
set -euo pipefail
# shellcheck source=as-root.sh
. "$(cd "$(dirname "$0")" && pwd)/as-root.sh"
export PATH="/usr/local/go/bin:${HOME:-/root}/go/bin:$PATH"

packages=(
  # container runtime and firewall under test
  podman runc nftables slirp4netns uidmap fuse-overlayfs
  # real clients and peers the integration tests drive
  git curl socat dnsmasq-base openssh-server openssh-client sqlite3 dnsutils
  busybox-static netcat-openbsd wget iproute2 procps psmisc ca-certificates
  # shells whose generated completions the tests run
  zsh fish
  # reads the .rpm make package builds (make package-test)
  rpm
  # load generator for benchmarks
  wrk
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Go modules of every workspace module, and the linter.
top=$(cd "$(dirname "$0")/.." && pwd)
for m in common gate credproxy sshagent shield-hook runner systemd; do
  (cd "$top/$m" && go mod download)
done
command -v staticcheck >/dev/null || GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.6.1
# The packager of make package (the same pin as scripts/package.sh).
command -v nfpm >/dev/null || GOFLAGS= GOWORK=off go install github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
echo "install-deps: ok"
