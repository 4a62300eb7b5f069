# terok-sandbox: build, test, e2e, bench, fuzz, lint, install.
# `make check` is the whole test suite (what CI runs through .ci/run).

SHELL     := /bin/bash
GO        ?= go
MODULES   := common gate credproxy sshagent shield-hook runner systemd
BIN       := $(CURDIR)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS   := -X terok.dev/sandbox/common/version.Version=$(VERSION)
PREFIX    ?= $(HOME)/.local
FUZZTIME  ?= 10s
BENCHTIME ?= 1x
E2E_TIMEOUT ?= 40m
# The end-to-end tests drive rootful and rootless podman and need root; a
# sudoer's `make check` runs that part (only) through sudo.
AS_ROOT   := $(if $(filter 0,$(shell id -u)),,sudo --preserve-env=PATH,GOFLAGS)

.PHONY: all build test e2e bench fuzz lint install uninstall clean check tools demo

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
e2e: build
	cd runner && $(AS_ROOT) env TEROK_BIN_DIR=$(BIN) $(GO) test -count=1 -tags e2e -timeout $(E2E_TIMEOUT) $(E2E_FLAGS) ./e2e/...

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

install: build
	install -d $(PREFIX)/bin
	install -m 0755 $(BIN)/terok-sandbox $(BIN)/terok-gate $(BIN)/terok-credential-proxy \
		$(BIN)/terok-ssh-agent $(BIN)/terok-shield-hook $(PREFIX)/bin/

uninstall:
	rm -f $(addprefix $(PREFIX)/bin/,terok-sandbox terok-gate terok-credential-proxy terok-ssh-agent terok-shield-hook)

clean:
	rm -rf $(BIN)

# Everything CI runs.
check: lint test fuzz e2e

# The main job: set up and launch one real hardened sandbox (root).
demo:
	scripts/demo.sh
