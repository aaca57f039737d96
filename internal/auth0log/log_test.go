package auth0log

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const sampleID = "90020261125101500123456789012345678901234567890123456789"

func TestDecodeKeepsEveryField(t *testing.T) {
	raw := `{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58.123Z","type":"fp",
		"tenant_name":"acme","security_context":{"ja3":"abc"},"scope":["openid"],"new_field":1}`
	l, err := Decode([]byte(raw))
	require.NoError(t, err)
	require.Equal(t, sampleID, l.ID)
	require.Equal(t, "fp", l.Type)
	require.Equal(t, time.Date(2026, 11, 25, 10, 14, 58, 123e6, time.UTC), l.Date)

	var back map[string]any
	require.NoError(t, json.Unmarshal(l.Raw, &back))
	for _, k := range []string{"tenant_name", "security_context", "scope", "new_field"} {
		require.Contains(t, back, k)
	}
}

// Decode copies the event; DecodeShared keeps the caller's bytes, trimmed.
func TestDecodeCopiesDecodeSharedDoesNot(t *testing.T) {
	raw := []byte(" {\"log_id\":\"" + sampleID + "\",\"date\":\"2026-11-25T10:14:58Z\",\"type\":\"s\"}\n")
	l, err := Decode(raw)
	require.NoError(t, err)
	shared, err := DecodeShared(raw)
	require.NoError(t, err)
	require.Equal(t, l, shared)
	require.Equal(t, byte('{'), shared.Raw[0])
	require.Equal(t, &raw[1], &shared.Raw[0], "DecodeShared aliases raw")
	raw[len(raw)-2] = ' ' // the closing brace
	require.Equal(t, byte('}'), l.Raw[len(l.Raw)-1], "Decode's copy is its own")
	require.Equal(t, byte(' '), shared.Raw[len(shared.Raw)-1])
}

func TestDecodeRejects(t *testing.T) {
	cases := map[string]struct {
		raw  string
		want string
	}{
		"not an object":  {`[1]`, "not a JSON object"},
		"empty":          {``, "not a JSON object"},
		"no log_id":      {`{"date":"2026-11-25T10:14:58Z","type":"s"}`, "no log_id"},
		"short log_id":   {`{"log_id":"900123","date":"2026-11-25T10:14:58Z","type":"s"}`, "want 56 digits"},
		"letters":        {`{"log_id":"` + strings.Repeat("a", 56) + `","date":"2026-11-25T10:14:58Z","type":"s"}`, "not all digits"},
		"bad id time":    {`{"log_id":"900` + "20261399" + strings.Repeat("0", 45) + `","date":"2026-11-25T10:14:58Z","type":"s"}`, "embedded time"},
		"no date":        {`{"log_id":"` + sampleID + `","type":"s"}`, "missing date"},
		"bad date":       {`{"log_id":"` + sampleID + `","date":"yesterday","type":"s"}`, "not RFC 3339"},
		"no type":        {`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z"}`, "missing type"},
		"log_id number":  {`{"log_id":900,"date":"2026-11-25T10:14:58Z","type":"s"}`, "decode log event"},
		"truncated JSON": {`{"log_id":"` + sampleID, "decode log event"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tc.raw))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDecodePageNamesTheBadEvent(t *testing.T) {
	good := `{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s"}`
	_, err := DecodePage([]byte(`[` + good + `,{"type":"s"}]`))
	require.ErrorContains(t, err, "event 1 of page")

	logs, err := DecodePage([]byte(`[]`))
	require.NoError(t, err)
	require.Empty(t, logs)

	_, err = DecodePage([]byte(`[` + good))
	require.ErrorContains(t, err, "decode log page")
}

func TestCheckpointAtSortsBeforeThatSecond(t *testing.T) {
	at := time.Date(2026, 11, 19, 8, 0, 0, 0, time.UTC)
	cp := CheckpointAt(at)
	require.Len(t, cp, IDLength)
	require.NoError(t, ValidateID(cp))
	got, err := IDTime(cp)
	require.NoError(t, err)
	require.Equal(t, at, got)

	sameSecond := "900" + at.Format(idTimeLayout) + strings.Repeat("0", 38) + "1"
	earlier := "900" + at.Add(-time.Second).Format(idTimeLayout) + strings.Repeat("9", 39)
	require.Less(t, cp, sameSecond)
	require.Greater(t, cp, earlier)
}

func TestTypeTable(t *testing.T) {
	for code, want := range map[string]struct {
		name    string
		outcome Outcome
	}{
		"s":        {"Success Login", Success},
		"fp":       {"Failed Login (Incorrect Password)", Failure},
		"limit_wc": {"Blocked Account", Failure},
	} {
		info, ok := LookupType(code)
		require.True(t, ok, code)
		require.Equal(t, want.name, info.Name, code)
		require.Equal(t, want.outcome, info.Outcome, code)
	}
	for _, info := range Types() {
		require.NotEmpty(t, info.Name, info.Code)
		require.Contains(t, []Outcome{Success, Failure, Info}, info.Outcome, info.Code)
	}
	info, ok := LookupType("brand_new_type")
	require.False(t, ok)
	require.Equal(t, "brand_new_type", info.Name)
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s"}`))
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58.5+02:00","type":"fu","details":{"a":[1,2]}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"log_id":null}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, err := Decode(raw)
		if err != nil {
			return
		}
		// Whatever decodes must satisfy the invariants the pipeline relies on.
		if ValidateID(l.ID) != nil || l.Type == "" || l.Date.IsZero() || !json.Valid(l.Raw) {
			t.Fatalf("accepted an invalid event: %+v", l)
		}
	})
}

// FuzzScanHead: the fast path accepts exactly what json.Valid accepts, and
// where it answers, it agrees with encoding/json.
func FuzzScanHead(f *testing.F) {
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s"}`))
	f.Add([]byte(`{"type":"s","Type":"f"}`))
	f.Add([]byte(`{"type":null,"date":"x","a":[1,-2.5e+3,{"b":"\u00e9\n"},true,false,null]}`))
	f.Add([]byte(`{"log_id":"\u0039","a":"é"}`))
	f.Add([]byte(`{"a":01}`))
	f.Add([]byte(` {"a":"b"} `))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, ok := scanHead(raw)
		valid := json.Valid(raw)
		if ok && !valid {
			t.Fatalf("fast path accepted invalid JSON %q", raw)
		}
		if !ok {
			return
		}
		var want head
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json: %v", raw, err)
		}
		if h != want {
			t.Fatalf("fast path %+v, encoding/json %+v for %q", h, want, raw)
		}
	})
}

// TestScanHeadAgreesWithValid: objects the fast path must take, and
// inputs it must leave to encoding/json.
func TestScanHeadAgreesWithValid(t *testing.T) {
	for _, tc := range []struct {
		raw string
		ok  bool
	}{
		{`{}`, true},
		{`{"log_id":"1","date":"d","type":"t","x":{"y":[1,2.5,-0,1e9,"\\\"",null,true,false]}}`, true},
		{`{"type":"a","type":"b"}`, true},
		{`{"type":null}`, true},
		{`{"Type":"a"}`, false},      // case-insensitive match: encoding/json's rules
		{`{"type":1}`, false},        // type error
		{`{"type":"\u0061"}`, false}, // escaped value
		{`{"t\u0079pe":"a"}`, false}, // escaped key
		{`{"a":01}`, false},
		{`{"a":1.}`, false},
		{`{"a":"` + "\x01" + `"}`, false},
		{`{"a":1}x`, false},
		{`{"a" 1}`, false},
		{`{"a":[1,]}`, false},
		{`{"a":nul}`, false},
		{`[]`, false},
		{strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat(`}`, 10001), false},
	} {
		h, ok := scanHead([]byte(tc.raw))
		require.Equal(t, tc.ok, ok, "%q", tc.raw)
		if ok {
			var want head
			require.NoError(t, json.Unmarshal([]byte(tc.raw), &want))
			require.Equal(t, want, h, "%q", tc.raw)
		}
	}
}
