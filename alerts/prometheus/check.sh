#!/usr/bin/env bash
# Checks authpipe's Prometheus alerting rules (used by `make test`):
#   1. promtool check rules  - syntax, PromQL and templates;
#   2. promtool test rules   - the unit tests in tests/*.yml;
#   3. every alert has a test and a runbook section its runbook_url points to.
# Exits non-zero on the first failure. Needs promtool (Debian package
# `prometheus`, 2.42).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! command -v promtool >/dev/null 2>&1; then
	echo "check.sh: promtool not found: install the Debian package prometheus" >&2
	exit 1
fi

shopt -s nullglob
rules=(./*.yml)
tests=(tests/*.yml)
if [ ${#rules[@]} -eq 0 ] || [ ${#tests[@]} -eq 0 ]; then
	echo "check.sh: no rule files or no test files in $here" >&2
	exit 1
fi

promtool check rules "${rules[@]}"
promtool test rules "${tests[@]}"

runbook=../../docs/runbook.md
status=0
for alert in $(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "${rules[@]}"); do
	if ! grep -q "alertname: *$alert *\$" "${tests[@]}"; then
		echo "check.sh: alert $alert has no test in tests/" >&2
		status=1
	fi
	anchor=$(echo "$alert" | tr 'A-Z' 'a-z')
	if ! grep -q "^## $alert\$" "$runbook" 2>/dev/null; then
		echo "check.sh: alert $alert has no section '## $alert' in docs/runbook.md" >&2
		status=1
	fi
	if ! grep -q "runbook.md#$anchor\$" "${rules[@]}"; then
		echo "check.sh: alert $alert: runbook_url does not end in runbook.md#$anchor" >&2
		status=1
	fi
done
[ "$status" -eq 0 ] && echo "check.sh: alerts, tests and runbook sections match"
exit "$status"
