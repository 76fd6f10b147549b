# One contract for laptops and CI. The README's two commands are
# `make demo` and `make test`; .ci/run calls `make ci`.
SHELL := /bin/bash
ROOT := $(CURDIR)
TOOLS := $(ROOT)/.tools/bin
export PATH := $(TOOLS):$(ROOT)/bin:/usr/local/go/bin:$(PATH)
export SLUICE_BIN := $(ROOT)/bin
export SLUICE_TEMPORAL_DEV := $(ROOT)/bin/temporal-dev
export SLUICE_FLAGD_TESTBED ?= $(abspath $(ROOT)/../shared/conformance/flagd-testbed)

MODULES := agent analysis-worker bench core devstack e2e flags proto services workflows
PKGS := $(foreach m,$(MODULES),github.com/sluicehq/sluice/$(m)/...)
BINARIES := sluice sluice-api sluice-worker sluice-agent sluice-demoapp sluice-dev

.PHONY: all bootstrap tools build generate check-generated lint breaking test test-unit \
	test-integration demo demo-ci ci bench bench-proxy bench-propagation bench-judges bench-flags \
	bench-abort bench-ingest bench-flip bench-flags-remote clean

all: build

bootstrap:
	@scripts/bootstrap.sh

tools: bootstrap

build:
	@mkdir -p bin
	go build -trimpath -o bin/sluice ./services/cmd/sluice
	go build -trimpath -o bin/sluice-api ./services/cmd/sluice-api
	go build -trimpath -o bin/sluice-worker ./workflows/cmd/sluice-worker
	go build -trimpath -o bin/sluice-agent ./agent/cmd/sluice-agent
	go build -trimpath -o bin/sluice-demoapp ./services/cmd/sluice-demoapp
	go build -trimpath -o bin/sluice-analysis-worker ./analysis-worker/cmd/sluice-analysis-worker
	go build -trimpath -o bin/sluice-dev ./devstack/cmd/sluice-dev

generate: bootstrap
	rm -rf proto/gen
	buf format -w
	buf generate

# Fails when the generated code or the formatting is not what buf produces.
check-generated: generate
	@git diff --exit-code -- proto buf.yaml buf.gen.yaml || { echo "generated code is stale: run make generate and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto/gen)" || { git status --porcelain -- proto/gen; echo "untracked generated files: run make generate and commit" >&2; exit 1; }

lint: bootstrap
	buf lint
	go vet $(PKGS)
	@out=$$(gofmt -l $(MODULES) tools 2>/dev/null); test -z "$$out" || { echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; }

# Compares the API with the previous commit (on main, comparing main with
# itself would check nothing).
breaking: bootstrap
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		buf breaking --against '.git#ref=HEAD~1'; \
	else echo "breaking: no previous commit with a buf module to compare against"; fi

# Every test: unit, integration (real NATS, Temporal, ClickHouse) and
# end-to-end. The servers are started by the tests themselves.
test: bootstrap build
	go test -race -count=1 -timeout 20m $(PKGS)

test-unit:
	go test -race -count=1 -short $(PKGS)

test-integration: test

# The README's first command: the whole stack and a demo canary, live.
demo: bootstrap build
	bin/sluice-dev up --demo

# The same demo, non-interactive: exits 0 only if the rollout succeeded and
# traffic moved as specified.
demo-ci: bootstrap build
	bin/sluice-dev up --demo --ci

ci: bootstrap check-generated lint breaking test demo-ci

# Benchmarks print their figures; docs/benchmarks.md keeps them with these
# commands. They are not part of CI.
bench: bench-proxy bench-propagation bench-judges bench-flags bench-abort bench-ingest bench-flip bench-flags-remote

bench-proxy: build
	@scripts/bootstrap.sh bench
	bench/proxy/run.sh

bench-propagation: build
	go run ./bench/propagation $(PROPAGATION_FLAGS)

bench-judges:
	cd bench && go run ./judges -mode=full -tune=500 -healthy=3000 -regr=200

bench-flags:
	cd flags && go test -run '^$$' -bench . -benchmem ./eval/

bench-abort: build
	go run ./bench/abort -runs 20

bench-ingest: build
	cd bench && go run ./ingest -reps 5 -runs raw,pipeline,discard -lag-rate 10000

bench-flip: build
	go run ./bench/flip $(FLIP_FLAGS)

bench-flags-remote:
	go run ./bench/flags

clean:
	rm -rf bin .stack
