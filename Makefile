# gatekeeper — build, test and run. `make help` lists the targets.

GO        ?= go
BIN       := bin/gatekeeper
CONFIG    ?= /etc/gatekeeper/gatekeeper.yaml
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# staticcheck runs through the Go module proxy; no local install needed.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@latest

.PHONY: all build test lint bench demo run clean help

all: build

help:
	@echo "make build   build $(BIN) (version $(VERSION))"
	@echo "make test    install missing test packages (root, apt-get), then go test -race ./... incl. end-to-end"
	@echo "make lint    gofmt, go vet, staticcheck"
	@echo "make bench   Go benchmarks, login latency and throughput direct vs through the gatekeeper (root)"
	@echo "make demo    throwaway lander sshd + gatekeeper on 127.0.0.1:2222 (root)"
	@echo "make run     build, then $(BIN) serve --config $(CONFIG)"
	@echo "make clean   remove bin/"

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/gatekeeper

# The end-to-end tests in test/ need root and the OpenSSH/oathtool/rsync packages; without root
# they skip (and fail under CI=true, where a skip would hide that they never ran).
test:
	scripts/install-deps.sh
	$(GO) test -race -count=1 -timeout 20m ./...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt -l: not formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@if command -v shellcheck >/dev/null; then shellcheck -x scripts/*.sh bench/*.sh .ci/run; \
	else echo "shellcheck not installed: shell scripts not checked (apt-get install shellcheck)"; fi

bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bench/login.sh
	bench/throughput.sh

demo: build
	scripts/demo.sh

run: build
	$(BIN) serve --config $(CONFIG)

clean:
	rm -rf bin
