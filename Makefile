# tokenbroker. `make demo` walks through the main job on the embedded store
# with the vendor simulator; `make test` runs the whole test suite.
GO        ?= go
# The Go every target builds, vets and tests with. A machine starts on its own
# Go and GOTOOLCHAIN=local ignores go.mod's go line, so it is exported here (and
# in scripts/, .ci/run and the Dockerfile): the go command fetches this
# toolchain from the module proxy once. Go 1.27.3 fixes the standard-library
# vulnerabilities of 1.26.8 that govulncheck reports (docs/security.md).
export GOTOOLCHAIN := go1.27.3
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The same flags the Dockerfile uses: a static, reproducible binary.
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOBUILD   := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0
# The chart, image, dashboard and alert checks are their own Go module, so the
# Kubernetes, Prometheus and BuildKit libraries stay out of the product's.
DEPLOYTEST := deploy/deploytest

.PHONY: all build demo test test-short lint vulncheck fmt bench clean

all: lint test

build:
	@mkdir -p bin
	$(GOBUILD) -o bin/broker ./cmd/broker
	$(GOBUILD) -o bin/vendorsim ./cmd/vendorsim
	$(GOBUILD) -o bin/demo ./cmd/demo

demo: build
	./bin/demo -broker ./bin/broker -vendorsim ./bin/vendorsim

# Everything, then the end-to-end suites (e2e) again on the production
# store, then the dashboard, alert and manifest checks of $(DEPLOYTEST). First scripts/ensure-test-deps.sh installs redis-server and Chromium
# (apt-get, as root) and builds or finds Vault, or fails in one line saying
# what to install: a missing server fails its tests, never skips them.
# test-short is the quick subset: no race detector, and tests that need a
# server that is not installed, or a broker process, skip.
test:
	@vault=$$(scripts/ensure-test-deps.sh) && \
	echo "$(GO) test -race -count=1 -timeout 25m ./..." && \
	TOKENBROKER_VAULT_BIN=$$vault $(GO) test -race -count=1 -timeout 25m ./... && \
	echo "TOKENBROKER_TEST_STORE=production $(GO) test -race -count=1 -timeout 15m ./e2e" && \
	TOKENBROKER_VAULT_BIN=$$vault TOKENBROKER_TEST_STORE=production $(GO) test -race -count=1 -timeout 15m ./e2e && \
	echo "cd $(DEPLOYTEST) && $(GO) test -race -count=1 ./..." && \
	cd $(DEPLOYTEST) && TOKENBROKER_VAULT_BIN=$$vault $(GO) test -race -count=1 -timeout 10m ./...

test-short:
	$(GO) test -count=1 -short ./...
	cd $(DEPLOYTEST) && $(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd $(DEPLOYTEST) && $(GO) vet ./... && $(GO) vet -tags chartcheck ./... && \
	  $(GO) run $(STATICCHECK) -tags chartcheck ./...
	@# docs/openapi.yaml under Redocly CLI's strict recommended rules (pinned,
	@# installed from npm into the cache by scripts/ensure-redocly.sh).
	redocly=$$(scripts/ensure-redocly.sh) && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
	  $$redocly lint --config docs/redocly.yaml docs/openapi.yaml
	@$(MAKE) --no-print-directory vulncheck

# Known vulnerabilities reachable from the code, tests included (they parse
# what vendors and browsers send too), against a database indexed locally from
# the golang.org/x/vulndb module (scripts/ensure-vulndb.sh): the standard
# library of the Go that runs it, and every module of the product's go.mod and
# deploy/deploytest's.
vulncheck:
	@db=$$(scripts/ensure-vulndb.sh) && $(GO) run $(GOVULNCHECK) -test -db "file://$$db" ./... && \
	  cd $(DEPLOYTEST) && $(GO) run $(GOVULNCHECK) -test -tags chartcheck -db "file://$$db" ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin data artifacts

# --- chart-check (issue 5): the Helm chart, the Dockerfile, the dashboard and alert rules ---
# `helm lint --strict` and `helm template` for every values file in helm/tokenbroker/ci, then
# the tests behind the build tag chartcheck in deploy/deploytest, its own Go module (kept out
# of `make test`, so it needs no Helm): every rendered manifest decoded strictly into the Kubernetes
# API types, the chart's refusals, sidecar mode from a parent chart, and the image (the
# Dockerfile's build flags are GOBUILD's; the binary is built from the build context and runs
# as 65532 from a read-only folder). Helm is built once from the Go module proxy and cached
# outside the repository by scripts/ensure-helm.sh.
CHART        := helm/tokenbroker
CHART_RENDER := artifacts/chart-render

.PHONY: chart-check
chart-check:
	@helm=$$(scripts/ensure-helm.sh) && echo "== helm $$($$helm version --template '{{.Version}}')" && \
	rm -rf $(CHART_RENDER) && mkdir -p $(CHART_RENDER) && \
	for values in $(CHART)/ci/*.yaml; do \
	  echo "== helm lint and template: $$values"; \
	  $$helm lint --strict --quiet $(CHART) -f $$values || exit 1; \
	  $$helm template tokenbroker $(CHART) --namespace tokenbroker -f $$values \
	    > $(CHART_RENDER)/$$(basename $$values) || exit 1; \
	done
	cd $(DEPLOYTEST) && $(GO) vet -tags chartcheck ./...
	cd $(DEPLOYTEST) && CHART_RENDER_DIR=$(CURDIR)/$(CHART_RENDER) HELM=$$($(CURDIR)/scripts/ensure-helm.sh) \
	  $(GO) test -tags chartcheck -count=1 ./...

# --- bench: whole-system figures on the production store (Vault and Redis
# started by the benchmark itself), side by side with direct vendor calls.
# Results and how to read them: docs/benchmarks.md.
.PHONY: bench bench-proxy bench-proxy-short bench-proxy-instructions broker-symbols
# Side by side on one machine in one run: the upstream direct, nginx, a bare
# httputil.ReverseProxy and the broker's /proxy, in alternating wrk rounds;
# then allocations per request, CPU per 1,000 req/s and RSS (docs/benchmarks.md).
# Needs wrk and nginx-light (Debian), installed here when absent and root.
bench-proxy: build
	@scripts/ensure-bench-tools.sh
	@mkdir -p artifacts
	$(GO) run ./internal/benchtest/proxybench -broker bin/broker -mode all $(BENCH_PROXY_FLAGS) > artifacts/bench-proxy.txt
	@cat artifacts/bench-proxy.txt

# One short round of both modes and 400 requests under callgrind: shows the
# harness works (CI); asserts no speed.
bench-proxy-short: broker-symbols
	@scripts/ensure-bench-tools.sh
	$(GO) run -ldflags=-s=false ./internal/benchtest/proxybench -broker bin/broker-symbols -short

# User-space instructions per request under valgrind's callgrind, the bare
# proxy beside the broker, and the functions the broker spends more in: they
# repeat from run to run where req/s does not (docs/benchmarks.md). Needs
# valgrind (Debian), installed here when absent and root. -s=false keeps the
# harness's symbol table (go run strips it), which names the bare proxy's
# functions.
bench-proxy-instructions: broker-symbols
	@scripts/ensure-bench-tools.sh
	@mkdir -p artifacts
	$(GO) run -ldflags=-s=false ./internal/benchtest/proxybench -broker bin/broker-symbols -mode instructions $(BENCH_PROXY_FLAGS) > artifacts/bench-proxy-instructions.txt
	@cat artifacts/bench-proxy-instructions.txt

# The broker as make build builds it but with its symbol table, which
# callgrind needs to name its functions (make build strips it: -s -w).
broker-symbols:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/broker-symbols ./cmd/broker

bench: bench-proxy
	@mkdir -p artifacts
	TOKENBROKER_TEST_STORE=production TOKENBROKER_VAULT_BIN=$${TOKENBROKER_VAULT_BIN:-$$(scripts/ensure-vault.sh)} \
	  $(GO) test -run '^$$' -bench . -benchmem -benchtime 3000x -count 3 ./internal/benchtest | tee artifacts/bench.txt
	$(GO) test -run '^$$' -bench 'Proxy$$' -benchmem ./proxy | tee -a artifacts/bench.txt

# --- chaos (issue 9): three replicas under load while replicas are SIGKILLed,
# Redis is killed and restarted, Vault is paused, the simulated vendors fail
# token and API calls, and connections are swapped; 6-second tokens, Atlassian
# rotation on. Stops by itself after CHAOS_DURATION and prints a summary table
# (docs/chaos.md); fails on a false flag, refresh-token reuse beyond the
# leeway, a failed call on a live replica other than a vendor failure, or a
# ServiceNow call failed by a store outage. CHAOS_SEED replays a schedule.
CHAOS_DURATION ?= 5m
CHAOS_SEED     ?= 0
.PHONY: chaos
chaos:
	@vault=$$(scripts/ensure-test-deps.sh) && \
	TOKENBROKER_VAULT_BIN=$$vault $(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./e2e/chaos \
	  -chaos.duration=$(CHAOS_DURATION) -chaos.seed=$(CHAOS_SEED)
