# otpq — see `make help`.
GO ?= go
BIN ?= bin/otpq

.PHONY: help build test test-race dev lint

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/otpq
	$(GO) build -o $(BIN) ./cmd/otpq

test: ## run the whole test suite (starts a Redis on 127.0.0.1:6379 if none answers)
	bash .ci/ensure-redis
	$(GO) test -race -count=1 -timeout 20m ./...

dev: ## zero-setup demo: embedded Redis, fake provider, worker
	$(GO) run ./cmd/otpq dev

lint: ## go vet and gofmt
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
