#!/usr/bin/env bash
# make test: install what the tests need (Debian packages, when root and
# missing), start a throwaway redis-server on a free port with its own data
# dir and append-only persistence, run vet, the race-enabled tests and the
# promtool checks against it, and stop it whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() { # package binary
	command -v "$2" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "test.sh: $2 is missing: install the Debian package $1" >&2
		return 1
	fi
	echo "test.sh: installing $1 for $2" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "$1" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq "$1" >/dev/null; }
	command -v "$2" >/dev/null
}
apt_install redis-server redis-server
apt_install redis-tools redis-cli
apt_install prometheus promtool
apt_install prometheus prometheus
apt_install prometheus-alertmanager amtool
apt_install docker-compose docker-compose
# Tests that need promtool or prometheus fail here instead of skipping.
export AUTHPIPE_TEST_REQUIRE_TOOLS=1

free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

dir=$(mktemp -d -t authpipe-test-XXXXXX)
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
	--appendonly yes --appendfsync everysec --save '' \
	--daemonize no --logfile "$dir/redis.log" &
redis_pid=$!
cleanup() {
	kill "$redis_pid" 2>/dev/null || true
	wait "$redis_pid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
	redis-cli -p "$port" ping >/dev/null 2>&1 && break
	sleep 0.1
done
redis-cli -p "$port" ping >/dev/null
export AUTHPIPE_TEST_REDIS_ADDR="127.0.0.1:$port"
echo "test.sh: redis-server $(redis-server --version | awk '{print $3}') on $AUTHPIPE_TEST_REDIS_ADDR"

go vet ./...
go test -race -count=1 -timeout 9m ./...
for f in alerts/prometheus/check.sh deploy/check.sh; do
	[ -x "$f" ] && "$f"
done
