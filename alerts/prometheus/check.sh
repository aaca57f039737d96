#!/usr/bin/env bash
# Checks authpipe's Prometheus alerting rules (used by `make test`):
#   1. promtool check rules  - syntax, PromQL and templates;
#   2. promtool test rules   - the unit tests in tests/*.yml;
#   3. every alert has a test and a runbook section its runbook_url points to;
#   4. the same for authpipe's threshold rules (../thresholds.yml, tests in
#      ../tests/*.test.yml): every rule has a test, a section '## Name' or
#      '### Name' and a runbook_url ending in runbook.md#<name in lowercase>,
#      and every runbook.md# anchor in the file is the GitHub anchor of
#      exactly one heading of docs/runbook.md.
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

# Threshold rules (authpipe's own alerts, checked by `authpipe rules check`
# and `authpipe rules test`; here only their tests and runbook sections).
thresholds=../thresholds.yml
thr_tests=(../tests/*.test.yml)
if [ ! -f "$thresholds" ]; then
	echo "check.sh: $thresholds not found" >&2
	exit 1
fi
if [ ${#thr_tests[@]} -eq 0 ]; then
	echo "check.sh: no threshold rule tests in ../tests/" >&2
	status=1
	thr_tests=(/dev/null)
fi
# GitHub's anchors of the runbook's headings (outside code fences): lower
# case, punctuation other than - and _ removed, spaces turned into -.
slugs=$(awk '/^[ \t]*```/ { fence = !fence; next }
	!fence && /^#+ / {
		sub(/^#+ +/, ""); sub(/[ \t]+$/, "")
		s = tolower($0); gsub(/[^a-z0-9 _-]/, "", s); gsub(/ /, "-", s)
		print s
	}' "$runbook" 2>/dev/null || true)
q="[\"']\{0,1\}"
rules_found=0
for rule in $(sed -n "s/^ *- name: *$q\([A-Za-z0-9_]*\).*/\1/p" "$thresholds"); do
	rules_found=1
	if ! grep -q "alertname: *$q$rule$q *\$" "${thr_tests[@]}"; then
		echo "check.sh: threshold rule $rule has no test in alerts/tests/" >&2
		status=1
	fi
	if ! grep -Eq "^###? $rule\$" "$runbook" 2>/dev/null; then
		echo "check.sh: threshold rule $rule has no section '## $rule' or '### $rule' in docs/runbook.md" >&2
		status=1
	fi
	anchor=$(echo "$rule" | tr 'A-Z' 'a-z')
	if ! grep -q "runbook.md#$anchor$q *\$" "$thresholds"; then
		echo "check.sh: threshold rule $rule: runbook_url does not end in runbook.md#$anchor" >&2
		status=1
	fi
done
if [ "$rules_found" -eq 0 ]; then
	echo "check.sh: no rules ('- name:') found in $thresholds" >&2
	status=1
fi
for anchor in $(sed -n "s/^ *runbook_url: *$q[^#\"' ]*runbook\.md#\([^\"' ]*\).*/\1/p" "$thresholds"); do
	n=$(printf '%s\n' "$slugs" | grep -cxF -- "$anchor" || true)
	if [ "$n" -eq 0 ]; then
		echo "check.sh: $thresholds: runbook_url anchor #$anchor matches no heading in docs/runbook.md" >&2
		status=1
	elif [ "$n" -gt 1 ]; then
		echo "check.sh: $thresholds: runbook_url anchor #$anchor matches $n headings in docs/runbook.md (GitHub numbers the later ones)" >&2
		status=1
	fi
done

[ "$status" -eq 0 ] && echo "check.sh: alerts, threshold rules, tests and runbook sections match"
exit "$status"
