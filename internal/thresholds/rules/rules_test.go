package rules

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each bad rule file gives its precise error: file, line, rule, field.
func TestBadRuleFiles(t *testing.T) {
	for file, want := range map[string]string{
		"unknown_field.bad.yml":            `testdata/unknown_field.bad.yml:5: rule "BruteForce": field "windw": unknown field`,
		"bad_duration.bad.yml":             `testdata/bad_duration.bad.yml:4: rule "BruteForce": field "window": invalid duration "5 minutes" (want e.g. 30s, 5m, 1h, 1d)`,
		"duplicate_name.bad.yml":           `testdata/duplicate_name.bad.yml:6: rule "BruteForce": field "name": duplicate rule name (first defined at testdata/duplicate_name.bad.yml:2)`,
		"unknown_group_by.bad.yml":         `testdata/unknown_group_by.bad.yml:4: rule "BruteForce": field "group_by": unknown value "country" (want ip, user_id, user_name, client_id or connection)`,
		"missing_types.bad.yml":            `testdata/missing_types.bad.yml:2: rule "BruteForce": field "types": required`,
		"unknown_type.bad.yml":             `testdata/unknown_type.bad.yml:3: rule "BruteForce": field "types": unknown Auth0 log type "failed_login"`,
		"bad_cron.bad.yml":                 `testdata/bad_cron.bad.yml:6: rule "BruteForce": field "cron": invalid cron expression "*/5 * * *" (want 5 fields, e.g. "*/5 * * * *")`,
		"every_and_cron.bad.yml":           `testdata/every_and_cron.bad.yml:7: rule "BruteForce": field "cron": set every or cron, not both`,
		"threshold_zero.bad.yml":           `testdata/threshold_zero.bad.yml:5: rule "BruteForce": field "threshold": want a number greater than 0, got 0`,
		"threshold_string.bad.yml":         `testdata/threshold_string.bad.yml:5: rule "BruteForce": field "threshold": want a number`,
		"distinct_same_as_group.bad.yml":   `testdata/distinct_same_as_group.bad.yml:5: rule "Stuffing": field "distinct": same field as group_by (want another field)`,
		"min_events_without_ratio.bad.yml": `testdata/min_events_without_ratio.bad.yml:4: rule "Spike": field "min_events": only applies to ratio rules (set ratio.of)`,
		"ratio_unknown_field.bad.yml": `testdata/ratio_unknown_field.bad.yml:4: rule "Spike": field "ratio.over": unknown field (want "of")` + "\n" +
			`testdata/ratio_unknown_field.bad.yml:4: rule "Spike": field "ratio.of": required`,
		"reserved_label.bad.yml": `testdata/reserved_label.bad.yml:9: rule "BruteForce": field "labels.ip": reserved: the group value of group_by ip`,
		"bad_template.bad.yml":   `testdata/bad_template.bad.yml:7: rule "BruteForce": field "annotations.summary": invalid template: no field .Valeu (want .Rule, .Tenant, .Severity, .GroupBy, .Group, .Value, .Threshold, .Window or .Labels)`,
		"bad_severity.bad.yml":   `testdata/bad_severity.bad.yml:6: rule "BruteForce": field "severity": unknown severity "page" (want critical, warning or info)`,
		"bad_name.bad.yml":       `testdata/bad_name.bad.yml:2: rule #1: field "name": invalid name "Brute Force" (want [A-Za-z0-9_]+)`,
		"reserved_name.bad.yml":  `testdata/reserved_name.bad.yml:2: rule "AuthpipeBruteForce": field "name": reserved name "AuthpipeBruteForce": names starting with "Authpipe" are authpipe's own health alerts`,
		"yaml_syntax.bad.yml":    `testdata/yaml_syntax.bad.yml:2: yaml: did not find expected ',' or ']'`,
		"top_level.bad.yml":      `testdata/top_level.bad.yml:1: field "groups": unknown field (want "rules")`,
		"empty.bad.yml":          `testdata/empty.bad.yml:1: empty file (want a mapping with a "rules" list)`,
	} {
		t.Run(file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", file))
			require.EqualError(t, err, want)
			var errs Errors
			require.True(t, errors.As(err, &errs))
		})
	}
	// Every *.bad.yml is in the table.
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(t, err)
	require.Len(t, files, 21)
}

func TestGoodRuleFile(t *testing.T) {
	rs, err := Load("testdata/good.yml")
	require.NoError(t, err)
	require.Equal(t, []string{"BruteForce", "Stuffing", "Spike"}, rs.Names())

	bf, _ := rs.Get("BruteForce")
	require.Equal(t, []string{"f", "fp", "fu"}, bf.Types)
	require.Equal(t, FieldIP, bf.GroupBy)
	require.Equal(t, 5*time.Minute, bf.Window)
	require.Equal(t, 10*time.Second, bf.Bucket())
	require.Equal(t, 30*time.Second, bf.Every)
	require.Equal(t, "warning", bf.Severity, "default severity")
	require.Equal(t, map[string]string{"team": "identity"}, bf.Labels)
	require.Equal(t, "testdata/good.yml", bf.File)
	require.Equal(t, 2, bf.Line)
	require.Equal(t, KindCount, bf.Kind())
	require.True(t, bf.Realtime())

	st, _ := rs.Get("Stuffing")
	require.Equal(t, KindDistinct, st.Kind())
	require.Equal(t, "cron */2 * * * *", st.Schedule())
	require.Zero(t, st.Every)
	require.Equal(t, int64(20), st.DistinctCap())

	sp, _ := rs.Get("Spike")
	require.Equal(t, KindRatio, sp.Kind())
	require.False(t, sp.Realtime())
	require.Equal(t, []string{"s", "f", "fp", "fu"}, sp.Ratio.Of)
	require.Equal(t, int64(50), sp.MinEvents)
	require.Equal(t, DefaultEvery, sp.Every, "default schedule")
	require.Equal(t, 0.5, sp.Threshold)
	require.Len(t, sp.countFP, 8)
	require.NotEqual(t, bf.countFP, sp.countFP)
}

func TestRuleDirectory(t *testing.T) {
	rs, err := Load("testdata/rules.d")
	require.NoError(t, err)
	require.Equal(t, []string{"BruteForce", "Blocked"}, rs.Names(), "*.yml files in name order, others ignored")

	// A name defined in two files of one directory is an error naming both.
	dir := t.TempDir()
	copyFile(t, "testdata/rules.d/a.yml", filepath.Join(dir, "a.yml"))
	copyFile(t, "testdata/rules.d/a.yml", filepath.Join(dir, "b.yml"))
	_, err = Load(dir)
	require.EqualError(t, err, filepath.Join(dir, "b.yml")+`:2: rule "BruteForce": field "name": duplicate rule name (first defined at `+filepath.Join(dir, "a.yml")+`:2)`)

	_, err = Load(t.TempDir())
	require.ErrorContains(t, err, "no *.yml files")
	_, err = Load(filepath.Join(dir, "missing.yml"))
	require.ErrorContains(t, err, "read rules:")
}

func TestBucketSizes(t *testing.T) {
	for _, tc := range []struct{ window, bucket time.Duration }{
		{time.Second, time.Second},
		{29 * time.Second, time.Second},
		{time.Minute, 2 * time.Second},
		{5 * time.Minute, 10 * time.Second},
		{100 * time.Second, 3 * time.Second},
		{24 * time.Hour, 48 * time.Minute},
	} {
		require.Equal(t, tc.bucket, bucketFor(tc.window), "window %s", tc.window)
	}
}

func TestCheckFiles(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, CheckFiles([]string{"testdata/good.yml", "testdata/rules.d"}, &out))
	require.Equal(t, "testdata/good.yml: 3 rules OK\ntestdata/rules.d: 2 rules OK\n", out.String())

	out.Reset()
	err := CheckFiles([]string{"testdata/good.yml", "testdata/unknown_field.bad.yml", "testdata/missing_types.bad.yml"}, &out)
	require.EqualError(t, err, "rules check: 2 of 3 paths have errors")
	require.Equal(t, "testdata/good.yml: 3 rules OK\n"+
		`testdata/unknown_field.bad.yml:5: rule "BruteForce": field "windw": unknown field`+"\n"+
		`testdata/missing_types.bad.yml:2: rule "BruteForce": field "types": required`+"\n", out.String())

	require.Error(t, CheckFiles(nil, &out))
}

var errLine = regexp.MustCompile(`^fuzz\.yml(:\d+)?: `)

// FuzzParseRules: the parser never panics, every error names the file (and
// a line), and what it accepts satisfies the rule invariants.
func FuzzParseRules(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yml")
	seeds = append(seeds, "../../../alerts/thresholds.yml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("rules:\n  - &a {name: A, types: [fp], window: 5m, threshold: 1}\n  - *a\n"))
	f.Add([]byte("rules: [{name: X, types: [fp], window: 1d, threshold: .5, ratio: {of: [s]}, min_events: 3}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := Parse("fuzz.yml", data)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			for _, e := range errs {
				if !errLine.MatchString(e.Error()) {
					t.Fatalf("error without file: %q", e.Error())
				}
			}
			return
		}
		seen := map[string]bool{}
		for _, r := range rules {
			if !ruleNamePattern.MatchString(r.Name) || seen[r.Name] {
				t.Fatalf("bad or duplicate name %q", r.Name)
			}
			seen[r.Name] = true
			if len(r.Types) == 0 || r.Window < MinWindow || r.Window > MaxWindow || !(r.Threshold > 0) {
				t.Fatalf("invalid rule accepted: %+v", r)
			}
			if (r.Every == 0) == (r.Cron == "") {
				t.Fatalf("rule %s: want exactly one of every and cron", r.Name)
			}
			if r.bucket < time.Second || r.countFP == "" || r.Severity == "" {
				t.Fatalf("rule %s not finished", r.Name)
			}
			if r.Distinct != "" && (r.Distinct == r.GroupBy || r.Ratio != nil) {
				t.Fatalf("rule %s: invalid distinct accepted", r.Name)
			}
			for k := range r.Labels {
				if k == "alertname" || k == "severity" || k == "tenant" || (r.GroupBy != "" && k == r.GroupBy) {
					t.Fatalf("rule %s: reserved label %s accepted", r.Name, k)
				}
			}
			if strings.ContainsAny(r.Name, " \n") {
				t.Fatal("name with spaces")
			}
		}
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o600))
}

// A set knows the types its rules count, ratio.of included.
func TestCountsType(t *testing.T) {
	rs, err := Load("testdata/rules.d")
	require.NoError(t, err)
	require.True(t, rs.CountsType("fp"))
	require.True(t, rs.CountsType("limit_wc"))
	require.False(t, rs.CountsType("s"))
	good, err := Load("testdata/good.yml")
	require.NoError(t, err)
	require.True(t, good.CountsType("s"), "a ratio.of type is counted")
	require.False(t, (*Set)(nil).CountsType("fp"))
}
