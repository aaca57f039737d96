#!/usr/bin/env bash
# Checks the container deployment (used by `make test`):
#   1. docker-compose config -q on docker-compose.yml, with and without the
#      demo profile, with no .env (the demo fallbacks) and with .env.example;
#      no warnings allowed;
#   2. every file or directory the compose file bind-mounts exists, every
#      ${VAR} it reads is listed in .env.example, and .env is git-ignored;
#   3. promtool check config on deploy/prometheus/prometheus.yml (its
#      rule_files reach the shipped alerts/prometheus/ rules through the
#      deploy/prometheus/rules link);
#   4. amtool check-config on deploy/alertmanager/alertmanager.yml, and its
#      routing: authpipe's health alerts to "operations", threshold alerts
#      to "security" (docs/runbook.md, "Alert paths").
# The dashboard and the metric names it uses are checked by Go tests
# (cmd/authpipe/e2e/deploy). Needs docker-compose (Debian 1.29, no
# engine), promtool (prometheus) and amtool (prometheus-alertmanager).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker-compose promtool amtool; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "deploy/check.sh: $tool not found (Debian packages docker-compose, prometheus, prometheus-alertmanager)" >&2
		exit 1
	fi
done

status=0
fail() {
	echo "deploy/check.sh: $*" >&2
	status=1
}

# The checks must not read a developer's own .env: run them on a copy of
# the project in a temporary directory.
tmp=$(mktemp -d -t authpipe-deploy-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp -r docker-compose.yml .env.example deploy alerts "$tmp"/
for args in "" "--profile demo" "--env-file .env.example" "--env-file .env.example --profile demo"; do
	# shellcheck disable=SC2086
	if ! out=$(cd "$tmp" && docker-compose $args -f docker-compose.yml config -q 2>&1); then
		fail "docker-compose${args:+ $args} config: $out"
	elif [ -n "$out" ]; then
		fail "docker-compose${args:+ $args} config warns: $out"
	fi
done

# Bind mounts: compose resolves ./paths to absolute ones; none may be missing.
mounts=$(cd "$tmp" && docker-compose --profile demo -f docker-compose.yml config 2>/dev/null |
	sed -n 's|^ *- \(/[^:]*\):.*|\1|p')
[ -n "$mounts" ] || fail "no bind mounts found in the compose config"
for m in $mounts; do
	[ -e "$m" ] || fail "docker-compose.yml mounts ${m#"$tmp"/}, which does not exist"
done

for var in $(grep -o '\${[A-Za-z_][A-Za-z0-9_]*' docker-compose.yml | cut -c3- | sort -u); do
	grep -q "^$var=" .env.example || fail "docker-compose.yml reads \${$var}, which .env.example does not list"
done
if git rev-parse --git-dir >/dev/null 2>&1 && ! git check-ignore -q .env; then
	fail ".env is not git-ignored"
fi

promtool check config deploy/prometheus/prometheus.yml >/dev/null ||
	fail "promtool check config deploy/prometheus/prometheus.yml"
if [ "$(readlink deploy/prometheus/rules)" != "../../alerts/prometheus" ]; then
	fail "deploy/prometheus/rules must link to ../../alerts/prometheus"
fi

am=deploy/alertmanager/alertmanager.yml
amtool check-config "$am" >/dev/null || fail "amtool check-config $am"
route() { # want labels...
	local want=$1
	shift
	amtool config routes test --config.file="$am" --verify.receivers="$want" "$@" >/dev/null 2>&1 ||
		fail "$am routes {$*} to $(amtool config routes test --config.file="$am" "$@" 2>/dev/null), want $want"
}
route operations alertname=AuthpipeDown job=authpipe severity=critical
route operations alertname=AuthpipeBufferUnreachable job=authpipe instance=authpipe:9464 tenant=default severity=critical
route operations alertname=AuthpipeThresholdAlertsFailing job=authpipe tenant=default receiver=alertmanager severity=critical
route operations alertname=AuthpipeNotReady job=authpipe instance=authpipe:9464 severity=warning
route security alertname=FailedLoginsPerIP tenant=default severity=warning category=brute_force ip=192.0.2.1
route security alertname=CredentialStuffing tenant=default severity=critical category=credential_stuffing ip=198.18.0.20
route security alertname=MFABombing tenant=default severity=critical category=mfa_fatigue user_id=auth0-x

[ "$status" -eq 0 ] && echo "deploy/check.sh: compose file, Prometheus and Alertmanager configs are valid"
exit "$status"
