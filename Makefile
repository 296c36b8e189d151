# otpq — see `make help`.
GO ?= go
BIN ?= bin/otpq

.PHONY: help build test test-fault reliability docs dev lint compose-up compose-fake bench

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/otpq
	$(GO) build -o $(BIN) ./cmd/otpq

test: ## run the whole test suite (starts a Redis on 127.0.0.1:6379 if none answers, installs chromium for the UI test), then the fault suite
	bash .ci/ensure-redis
	bash .ci/ensure-chromium
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) test-fault

test-fault: ## fault-injection suite: real worker/fake/redis-server processes (writes no file)
	bash .ci/ensure-redis
	@command -v redis-server >/dev/null 2>&1 || { echo "test-fault: redis-server not found (apt-get install redis-server)"; exit 1; }
	$(GO) vet -tags fault ./internal/faulttest/
	$(FAULT_ENV) $(GO) test -tags fault -count=1 -timeout 15m -v ./internal/faulttest/

reliability: ## run the fault-injection suite and regenerate RELIABILITY.md from its figures
	$(MAKE) test-fault FAULT_ENV=OTPQ_RELIABILITY_OUT=$(CURDIR)/RELIABILITY.md

bench: ## load benchmark, ~8 min: otpq vs a hand-written asynq baseline on its own redis-server and a stub provider; regenerates BENCHMARKS.md
	bash .ci/ensure-redis
	$(GO) build -o $(BIN) ./cmd/otpq
	$(GO) build -o $(BIN)-bench ./cmd/otpq-bench
	$(GO) test -run '^$$' -bench . -benchtime 1s -count 1 ./producer ./internal/bulk > $(BIN).gobench.txt
	OTPQ_BENCH_COMMAND="make bench" $(BIN)-bench --otpq $(BIN) --out BENCHMARKS.md --go-bench $(BIN).gobench.txt $(BENCH_FLAGS)

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
