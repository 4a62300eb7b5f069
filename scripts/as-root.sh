# Sourced by the scripts that need root (install-deps.sh, demo.sh): as root
# they go on; otherwise they run themselves again through sudo, and on a
# host without sudo they stop with what to do. Works for root on a host
# that has no sudo at all (a fresh Debian 12 container or VM) and for a
# sudoer.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    echo "$(basename "$0"): needs root; running it through sudo" >&2
    exec sudo --preserve-env=PATH,GOFLAGS,GOPATH,GOCACHE,GOMODCACHE,CONTAINERS_CONF,TEROK_DEMO_DIR,TEROK_DEMO_BIN_DIR "$0" "$@"
  fi
  echo "$(basename "$0"): needs root, and sudo is not installed: run it as root (su -c '$0')" >&2
  exit 1
fi
