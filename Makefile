# terok-sandbox: build, test, e2e, bench, fuzz, lint, install.
# `make check` is the whole test suite (what CI runs through .ci/run).

SHELL     := /bin/bash
GO        ?= go
MODULES   := common gate credproxy sshagent shield-hook runner systemd test/houserules
BIN       := $(CURDIR)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS   := -X terok.dev/sandbox/common/version.Version=$(VERSION)
# Installation layout (docs/install.md). DESTDIR stages an install (the
# package is built from one); every other path is the final location.
PREFIX    ?= $(HOME)/.local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
# Executables that are not commands: the OCI hook (the runner finds it as
# <bin>/../libexec/terok/terok-shield-hook).
LIBEXECDIR ?= $(PREFIX)/libexec/terok
DATADIR   ?= $(PREFIX)/share
MANDIR    ?= $(DATADIR)/man
DOCDIR    ?= $(DATADIR)/doc/terok-sandbox
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR  ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
# systemd reads user units from ~/.local/share/systemd/user and, for /usr
# and /usr/local, both scopes from <prefix>/lib/systemd; a home install gets
# no system units (no system manager reads them there).
ifeq ($(PREFIX),$(HOME)/.local)
SYSTEMDUSERUNITDIR   ?= $(DATADIR)/systemd/user
SYSTEMDSYSTEMUNITDIR ?=
else
SYSTEMDUSERUNITDIR   ?= $(PREFIX)/lib/systemd/user
SYSTEMDSYSTEMUNITDIR ?= $(PREFIX)/lib/systemd/system
endif
# Generated install files (man page, completions, units, example config).
GEN       := $(CURDIR)/build/gen
DAEMONS   := terok-gate terok-credential-proxy terok-ssh-agent
# Section 8 pages: the daemons and the OCI hook.
MANPAGES8 := $(DAEMONS) terok-shield-hook
UNITS     := terok-gate.socket terok-gate.service terok-credential-proxy.socket terok-credential-proxy.service \
	terok-ssh-agent.socket terok-ssh-agent.service
FUZZTIME  ?= 10s
BENCHTIME ?= 1x
E2E_TIMEOUT ?= 40m
# The end-to-end tests drive rootful and rootless podman and need root; a
# sudoer's `make check` runs that part (only) through sudo.
AS_ROOT   := $(if $(filter 0,$(shell id -u)),,sudo --preserve-env=PATH,GOFLAGS)

.PHONY: all build gen test e2e bench fuzz lint install uninstall package package-test systemd-test clean check tools demo

all: build

# Daemons that need SQLite are built with cgo; the hook and the in-container
# bridge must run anywhere, so those are static.
# urfave_cli_no_docs leaves out urfave/cli's man/markdown generator (unused),
# and with it blackfriday's package init: ~0.5 ms off every CLI call.
build:
	@mkdir -p $(BIN)
	cd runner      && $(GO) build -trimpath -tags urfave_cli_no_docs -ldflags '$(LDFLAGS)' -o $(BIN)/terok-sandbox ./cmd/terok-sandbox
	cd gate        && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/terok-gate ./cmd/terok-gate
	cd credproxy   && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/terok-credential-proxy ./cmd/terok-credential-proxy
	cd sshagent    && CGO_ENABLED=1 $(GO) build -trimpath -tags 'netgo osusergo sqlite_omit_load_extension' \
		-ldflags '$(LDFLAGS) -linkmode external -extldflags -static' -o $(BIN)/terok-ssh-agent ./cmd/terok-ssh-agent
	cd shield-hook && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/terok-shield-hook ./cmd/terok-shield-hook

# Unit and integration tests (real git, curl, ssh, nft, sqlite where a test
# needs them), with the race detector. Fuzz seed corpora run here as tests.
test:
	@set -e; for m in $(MODULES); do echo "== go test $$m"; (cd $$m && $(GO) test -race -count=1 ./...); done
	@echo "== go test gate/third_party/gitkit (the patched copy)"; cd gate && $(GO) test -race -count=1 github.com/sosedoff/gitkit

# End-to-end tests through real podman, rootful and rootless. Needs root
# and the packages scripts/install-deps.sh installs.
# Then the library's launch example (runner/sandbox Example_launch) runs
# for real on a host its TestMain sets up from the same harness.
e2e: build
	cd runner && $(AS_ROOT) env TEROK_BIN_DIR=$(BIN) $(GO) test -count=1 -tags e2e -timeout $(E2E_TIMEOUT) $(E2E_FLAGS) ./e2e/...
	cd runner && $(AS_ROOT) env TEROK_BIN_DIR=$(BIN) $(GO) test -count=1 -tags e2e -timeout $(E2E_TIMEOUT) -run '^Example_launch$$' ./sandbox/

bench: build
	@set -e; for m in $(MODULES); do echo "== go test -bench $$m"; (cd $$m && TEROK_BIN_DIR=$(BIN) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...); done
	@echo "== credential proxy under wrk (scripts/bench-proxy.sh)"
	scripts/bench-proxy.sh
	@echo "== e2e benchmarks (root, real podman)"
	cd runner && TEROK_BIN_DIR=$(BIN) $(GO) test -tags e2e -run '^$$' -bench . -benchtime 1x -timeout $(E2E_TIMEOUT) ./e2e/

# Short run of every fuzz target (FUZZTIME each).
fuzz:
	@FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh $(MODULES)

lint: tools
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./... && $(GO) vet -tags e2e ./... && staticcheck ./...); done

tools:
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.6.1

# Man page, completions, units (running the daemons from BINDIR) and the
# example config, generated from the CLI definitions and unit templates by
# a build tool that keeps urfave/cli's docs generator.
# The daemons' man pages come from the built binaries' -h output.
gen: build
	@rm -rf $(GEN)
	cd runner && $(GO) run ./cmd/terok-sandbox-gen -out $(GEN) -bindir $(BINDIR) -built $(BIN)

install: build gen
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)/examples \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(SYSTEMDUSERUNITDIR)
	install -m 0755 $(BIN)/terok-sandbox $(addprefix $(BIN)/,$(DAEMONS)) $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BIN)/terok-shield-hook $(DESTDIR)$(LIBEXECDIR)/
	gzip -9nc $(GEN)/man/terok-sandbox.1 > $(DESTDIR)$(MANDIR)/man1/terok-sandbox.1.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/terok-sandbox.1.gz
	for p in $(MANPAGES8); do gzip -9nc $(GEN)/man/$$p.8 > $(DESTDIR)$(MANDIR)/man8/$$p.8.gz && chmod 0644 $(DESTDIR)$(MANDIR)/man8/$$p.8.gz || exit 1; done
	install -m 0644 $(GEN)/completions/terok-sandbox.bash $(DESTDIR)$(BASHCOMPDIR)/terok-sandbox
	install -m 0644 $(GEN)/completions/_terok-sandbox $(DESTDIR)$(ZSHCOMPDIR)/_terok-sandbox
	install -m 0644 $(GEN)/completions/terok-sandbox.fish $(DESTDIR)$(FISHCOMPDIR)/terok-sandbox.fish
	install -m 0644 $(addprefix $(GEN)/units/user/,$(UNITS)) $(DESTDIR)$(SYSTEMDUSERUNITDIR)/
	$(if $(SYSTEMDSYSTEMUNITDIR),install -d $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR) && install -m 0644 $(addprefix $(GEN)/units/system/,$(UNITS)) $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/,@true)
	install -m 0644 $(GEN)/config.example.toml $(DESTDIR)$(DOCDIR)/examples/config.toml
	install -m 0644 LICENSE CHANGELOG.md README.md $(DESTDIR)$(DOCDIR)/

# Removes exactly what install put there (and the hook an older install
# put into BINDIR); never the state, config or units the runner wrote.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,terok-sandbox $(DAEMONS) terok-shield-hook) \
		$(DESTDIR)$(LIBEXECDIR)/terok-shield-hook $(DESTDIR)$(MANDIR)/man1/terok-sandbox.1.gz \
		$(patsubst %,$(DESTDIR)$(MANDIR)/man8/%.8.gz,$(MANPAGES8)) \
		$(DESTDIR)$(BASHCOMPDIR)/terok-sandbox $(DESTDIR)$(ZSHCOMPDIR)/_terok-sandbox $(DESTDIR)$(FISHCOMPDIR)/terok-sandbox.fish \
		$(addprefix $(DESTDIR)$(SYSTEMDUSERUNITDIR)/,$(UNITS)) \
		$(if $(SYSTEMDSYSTEMUNITDIR),$(addprefix $(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/,$(UNITS))) \
		$(DESTDIR)$(DOCDIR)/examples/config.toml $(addprefix $(DESTDIR)$(DOCDIR)/,LICENSE CHANGELOG.md README.md)
	-rmdir $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null

# The .deb and the .rpm (nfpm, pinned in the script), versioned from git describe; they are
# built from `make install DESTDIR=build/pkgroot PREFIX=/usr`.
package:
	flock /tmp/terok-build.lock scripts/package.sh $(CURDIR)/build

# Build the packages, read the .rpm, dpkg -i the .deb, run the installed binaries, dpkg -r it and
# check nothing of ours is left (root; the script holds the e2e lock while
# the package is installed).
package-test:
	$(AS_ROOT) scripts/package-test.sh

# The package's units under a real systemd (PID 1 in a rootful podman
# container over this host's file system); skips where podman cannot run it.
systemd-test:
	$(AS_ROOT) scripts/systemd-test.sh

clean:
	rm -rf $(BIN) $(CURDIR)/build

# Everything CI runs.
check: lint test fuzz e2e package-test systemd-test

# The main job: set up and launch one real hardened sandbox (root).
demo:
	scripts/demo.sh
