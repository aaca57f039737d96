.PHONY: test bench build vet fuzz

# The test command: installs and starts what the tests need (redis-server,
# promtool), then runs vet, the race-enabled tests and the rule checks.
test:
	./scripts/test.sh

build:
	go build -o bin/authpipe ./cmd/authpipe

vet:
	go vet ./...

# The end-to-end benchmark (BENCHMARKS.md): a million events from the Auth0
# simulator through `authpipe run` (Redis, then the embedded buffer) to the
# Segment simulator. Not part of `make test`. BENCH_FLAGS passes flags, e.g.
# BENCH_FLAGS='-events 200000 -backends redis'. The Go micro-benchmarks of
# the hot paths: go test -run '^$$' -bench . ./internal/...
BENCH_FLAGS ?=
bench:
	go build -o bin/authpipe ./cmd/authpipe
	go build -o bin/authpipe-bench ./cmd/authpipe-bench
	bin/authpipe-bench -authpipe bin/authpipe $(BENCH_FLAGS)

# Short fuzzing runs of every parser (config, log decoder, rules, mapping).
fuzz:
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 20s ./internal/auth0log/
	go test -run '^$$' -fuzz '^FuzzDecodeFields$$' -fuzztime 20s ./internal/auth0log/
	go test -run '^$$' -fuzz '^FuzzObject$$' -fuzztime 20s ./internal/auth0log/
	go test -run '^$$' -fuzz FuzzLoad -fuzztime 20s ./internal/config/
