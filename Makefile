# gatekeeper — build, test and run. `make help` lists the targets.

GO        ?= go
BIN       := bin/gatekeeper
# XCRYPTO is the patched copy of golang.org/x/crypto that go.mod replaces the module with.
XCRYPTO   := third_party/golang.org/x/crypto
CONFIG    ?= /etc/gatekeeper/gatekeeper.yaml
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# staticcheck runs through the Go module proxy; no local install needed.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@latest

PREFIX    ?= /usr/local
DESTDIR   ?=
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
SYSUSERS_DIR     ?= /usr/lib/sysusers.d
TMPFILES_DIR     ?= /usr/lib/tmpfiles.d

# How long `make fuzz` runs each fuzz target.
FUZZTIME  ?= 60s

.PHONY: all build test lint fuzz bench demo run install clean help

all: build

help:
	@echo "make build   build $(BIN) (version $(VERSION))"
	@echo "make test    install missing test packages (root, apt-get), then go test -race ./... incl. end-to-end"
	@echo "make lint    gofmt, go vet, staticcheck"
	@echo "make fuzz    run every fuzz target (func FuzzX in *_test.go) for FUZZTIME each (default $(FUZZTIME)); not in CI"
	@echo "make bench   Go benchmarks; bench/report.sh: one table direct vs through the gatekeeper (logins, throughput, scp/rsync, 50 ms RTT, idle memory, login storm); code logins on bbolt vs etcd (root)"
	@echo "make demo    throwaway lander sshd + gatekeeper on 127.0.0.1:2222 (root)"
	@echo "make run     build, then $(BIN) serve --config $(CONFIG)"
	@echo "make install install the binary, systemd unit, sysusers.d and tmpfiles.d snippets (DESTDIR, PREFIX)"
	@echo "make clean   remove bin/"

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/gatekeeper

# The end-to-end tests in test/ need root and the OpenSSH/oathtool/rsync packages; without root
# they skip (and fail under CI=true, where a skip would hide that they never ran).
# The second line runs gatekeeper/sockio's tests without -race, where its raw system calls run
# (under -race it uses package syscall's, which the detector sees). The third runs upstream's
# own tests of the patched x/crypto copy (a module of its own, which ./... does not reach); see
# third_party/golang.org/x/crypto/PATCHES.md.
test:
	scripts/install-deps.sh
	$(GO) test -race -count=1 -timeout 20m -parallel 4 ./...
	$(GO) test -count=1 -timeout 2m ./gatekeeper/sockio
	cd $(XCRYPTO) && $(GO) test -race -count=1 -timeout 10m ./...

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './third_party/*') $(XCRYPTO)/ssh/*.go); if [ -n "$$out" ]; then echo "gofmt -l: not formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd $(XCRYPTO) && $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@if command -v shellcheck >/dev/null; then shellcheck -x scripts/*.sh bench/*.sh .ci/run; \
	else echo "shellcheck not installed: shell scripts not checked (apt-get install shellcheck)"; fi

# fuzz finds every fuzz target in the repository and runs each for $(FUZZTIME), one after the
# other: go test -fuzz takes one target of one package at a time. It stops at the first failure;
# the failing input is then in that package's testdata/fuzz/, to be committed with the fix as a
# regression test. Not part of test or CI: it runs for minutes.
fuzz:
	@set -e; grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=testdata '^func Fuzz' . | sort | \
	while read -r file; do \
		pkg=./$$(dirname "$${file#./}"); \
		for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$file"); do \
			echo "== $$pkg $$name for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done

# bench: the Go benchmarks, then bench/report.sh (login latency, throughput, scp/rsync, 50 ms
# round trip, idle-session memory, login storm, CPU profile: one table, direct vs through the
# gatekeeper), then bench/cluster.sh (code logins on bbolt vs etcd). Root; takes a while.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bench/report.sh
	bench/cluster.sh

# demo.sh installs what the demo runs when missing (scripts/install-deps.sh with the demo's
# commands: openssh-server, openssh-client, oathtool; apt-get, no service started), as root.
demo: build
	scripts/demo.sh

run: build
	$(BIN) serve --config $(CONFIG)

# install puts the daemon where the unit expects it ($(PREFIX)/bin/gatekeeper; the unit's
# ExecStart is rewritten when PREFIX is not /usr/local) and never overwrites an existing config.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/gatekeeper
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	sed 's|/usr/local/bin/gatekeeper|$(PREFIX)/bin/gatekeeper|' systemd/gatekeeper.service \
		> $(DESTDIR)$(SYSTEMD_UNIT_DIR)/gatekeeper.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/gatekeeper.service
	install -D -m 0644 systemd/gatekeeper.sysusers $(DESTDIR)$(SYSUSERS_DIR)/gatekeeper.conf
	install -D -m 0644 systemd/gatekeeper.tmpfiles $(DESTDIR)$(TMPFILES_DIR)/gatekeeper.conf
	install -D -m 0644 config/gatekeeper.example.yaml $(DESTDIR)/usr/share/doc/gatekeeper/gatekeeper.example.yaml
	@if [ ! -e $(DESTDIR)/etc/gatekeeper/gatekeeper.yaml ]; then \
		install -D -m 0640 config/gatekeeper.example.yaml $(DESTDIR)/etc/gatekeeper/gatekeeper.yaml; \
		echo "installed an example config at $(DESTDIR)/etc/gatekeeper/gatekeeper.yaml: edit it"; fi

clean:
	rm -rf bin
