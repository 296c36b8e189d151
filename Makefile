# otpq — see `make help`.
GO ?= go
BIN ?= bin/otpq

.PHONY: help build test test-fault test-cluster mutate reliability docs dev lint compose-up compose-fake bench

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/otpq
	$(GO) build -o $(BIN) ./cmd/otpq

test: ## run the whole test suite (each test binary starts its own redis-server; installs redis-server and chromium when missing), then the fault suite
	bash .ci/ensure-redis
	bash .ci/ensure-chromium
	bash .ci/ensure-prometheus
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) test-fault

test-fault: ## fault-injection suite: real worker/fake/redis-server processes (writes no file)
	bash .ci/ensure-redis
	@command -v redis-server >/dev/null 2>&1 || { echo "test-fault: redis-server not found (apt-get install redis-server)"; exit 1; }
	$(GO) vet -tags fault ./internal/faulttest/
	$(FAULT_ENV) $(GO) test -tags fault -count=1 -timeout 15m -v ./internal/faulttest/

test-cluster: ## Redis Cluster suite (issue 21): 3 masters + 3 replicas, 16 shards: every end-to-end behaviour, a slot migration and a master killed during a drain (prints figure lines)
	bash .ci/ensure-redis
	$(GO) vet -tags cluster ./worker/
	$(GO) test -tags cluster -race -count=1 -timeout 10m -run '^TestCluster$$' -v ./worker/

mutate: ## mutation check (not part of test): apply each one-line mutant of internal/mutate/mutants.tsv to a copy of the committed tree, run the tests that should catch it, report survivors
	$(GO) run ./internal/mutate $(MUTANTS)

reliability: ## run the fault-injection suite and regenerate RELIABILITY.md from its figures
	$(MAKE) test-fault FAULT_ENV=OTPQ_RELIABILITY_OUT=$(CURDIR)/RELIABILITY.md

bench: ## load benchmark, ~17 min: otpq vs a hand-written asynq baseline on its own redis-server and a stub provider, and tracing's cost against an otpq built without it; regenerates BENCHMARKS.md
	bash .ci/ensure-redis
	$(GO) build -o $(BIN) ./cmd/otpq
	$(GO) build -tags otpq_notrace -o $(BIN)-notrace ./cmd/otpq
	$(GO) build -o $(BIN)-bench ./cmd/otpq-bench
	$(GO) test -run '^$$' -bench . -benchtime 1s -count 1 ./producer ./internal/bulk ./internal/api > $(BIN).gobench.txt
	OTPQ_BENCH_COMMAND="make bench" $(BIN)-bench --otpq $(BIN) --otpq-notrace $(BIN)-notrace --out BENCHMARKS.md --go-bench $(BIN).gobench.txt $(BENCH_FLAGS)

docs: ## regenerate the README's command and configuration tables from otpq --help
	$(GO) run ./cmd/otpq docs --readme README.md

dev: ## zero-setup demo: embedded Redis, fake provider, worker
	$(GO) run ./cmd/otpq dev

lint: ## go vet and gofmt
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)

compose-up: ## docker compose up: redis and a worker on the real EngageLab (needs ENGAGELAB_DEV_KEY/_SECRET)
	docker compose up --build

compose-fake: ## docker compose up with the fake EngageLab instead (UI on http://127.0.0.1:8080/monitoring/)
	ENGAGELAB_BASE_URL=http://fake-engagelab:8090 ENGAGELAB_DEV_KEY=compose-dev-key ENGAGELAB_DEV_SECRET=compose-dev-secret \
		docker compose --profile fake up --build
