.PHONY: test bench build vet fuzz

# The test command: installs and starts what the tests need (redis-server,
# promtool), then runs vet, the race-enabled tests and the rule checks.
test:
	./scripts/test.sh

build:
	go build -o bin/authpipe ./cmd/authpipe

vet:
	go vet ./...

# Short fuzzing runs of every parser (config, log decoder, rules, mapping).
fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 20s ./internal/auth0log/
	go test -run '^$$' -fuzz FuzzLoad -fuzztime 20s ./internal/config/
