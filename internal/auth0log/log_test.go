package auth0log

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
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
		"log_id number":  {`{"log_id":900,"date":"2026-11-25T10:14:58Z","type":"s"}`, "decode log event: log_id is a JSON number"},
		"type object":    {`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":{}}`, "type is a JSON object"},
		"null log_id":    {`{"log_id":"` + sampleID + `","log_id":null,"date":"2026-11-25T10:14:58Z","type":"s"}`, "no log_id"},
		"trailing data":  {`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s"}x`, "decode log event"},
		"too deep":       {`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s","a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, "decode log event"},
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
	for _, info := range typeTable {
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

// reference decodes the fields of raw as encoding/json decodes the event
// into a map: the semantics Decode documents.
func reference(t *testing.T, raw []byte) (vals [numFields]string, ok bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return vals, false
	}
	for f, name := range fieldNames {
		var s string
		if v, there := m[name]; there && json.Unmarshal(v, &s) == nil {
			vals[f] = s
		}
	}
	return vals, true
}

// FuzzDecodeFields: where Decode accepts an event, each field is what
// encoding/json reads, and Pack and Unpack give the same Log back.
func FuzzDecodeFields(f *testing.F) {
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s","ip":"203.0.113.9","user_id":"auth0|1"}`))
	f.Add([]byte(`{"type":"s","Type":"f","log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z"}`))
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s","user_name":"\u00e9\n","ip":null,"client_id":1,"connection":"\xff"}`))
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s","user_name":"a","user_name":"b","connection":"é"}`))
	f.Add([]byte(`{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","t\u0079pe":"s","user_id":"\ud800"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, err := Decode(raw)
		want, ok := reference(t, bytes.TrimSpace(raw))
		if err != nil {
			return
		}
		if !ok {
			t.Fatalf("Decode accepted %q, encoding/json does not", raw)
		}
		got := [numFields]string{l.ID, want[fDate], l.Type, l.UserID, l.UserName, l.IP, l.ClientID, l.Connection}
		if got != want {
			t.Fatalf("Decode %q, encoding/json %q for %q", got, want, raw)
		}
		back, err := Unpack(l.ID, l.Pack(), l.Raw)
		if err != nil {
			t.Fatalf("Unpack: %v", err)
		}
		if !reflect.DeepEqual(back, l) {
			t.Fatalf("Unpack(Pack) = %+v, want %+v", back, l)
		}
	})
}

func TestPackUnpack(t *testing.T) {
	plain := `{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58.5Z","type":"fp","user_id":"auth0|1","user_name":"ann@example.com",` +
		`"ip":"203.0.113.9","client_id":"abc","connection":"db","details":{"ip":"x"}}`
	l, err := Decode([]byte(plain))
	require.NoError(t, err)
	packed := l.Pack()
	require.NotNil(t, packed)
	require.Less(t, len(packed), 30, "offsets, not copies")

	back, err := Unpack(l.ID, packed, l.Raw)
	require.NoError(t, err)
	require.Equal(t, l, back)
	require.Equal(t, "ann@example.com", back.UserName)
	require.Equal(t, time.Date(2026, 11, 25, 10, 14, 58, 5e8, time.UTC), back.Date)

	t.Run("stored without fields (earlier versions) decodes raw", func(t *testing.T) {
		back, err := Unpack(l.ID, nil, l.Raw)
		require.NoError(t, err)
		require.Equal(t, l, back)
	})
	t.Run("fields that do not fit raw are ignored", func(t *testing.T) {
		other := []byte(strings.Replace(plain, `"type":"fp"`, `"type":"s", "x":1`, 1))
		back, err := Unpack(l.ID, packed, other)
		require.NoError(t, err)
		require.Equal(t, "s", back.Type)
		for _, bad := range [][]byte{{2}, {packVersion}, append(bytes.Clone(packed), 0), packed[:len(packed)-1]} {
			back, err := Unpack(l.ID, bad, l.Raw)
			require.NoError(t, err)
			require.Equal(t, l, back)
		}
	})
	t.Run("the event's log_id must be the stored one", func(t *testing.T) {
		other := CheckpointAt(time.Date(2026, 11, 25, 10, 15, 0, 0, time.UTC))
		_, err := Unpack(other, packed, l.Raw)
		require.ErrorContains(t, err, "stored under log_id "+other)
		_, err = Unpack(other, nil, l.Raw)
		require.ErrorContains(t, err, "stored under log_id "+other)
	})
	t.Run("a raw that does not decode is an error", func(t *testing.T) {
		_, err := Unpack(l.ID, nil, []byte(`{"log_id":`))
		require.ErrorContains(t, err, "not valid JSON")
	})
	t.Run("escaped fields are not packed", func(t *testing.T) {
		esc, err := Decode([]byte(strings.Replace(plain, `"ann@example.com"`, `"ann\u0040example.com"`, 1)))
		require.NoError(t, err)
		require.Equal(t, "ann@example.com", esc.UserName)
		require.Nil(t, esc.Pack())
		back, err := Unpack(esc.ID, esc.Pack(), esc.Raw)
		require.NoError(t, err)
		require.Equal(t, esc, back)
	})
	t.Run("a log not decoded here is not packed", func(t *testing.T) {
		require.Nil(t, Log{ID: sampleID, Type: "s", Raw: l.Raw}.Pack())
	})
}

func TestDecodePage(t *testing.T) {
	good := `{"log_id":"` + sampleID + `","date":"2026-11-25T10:14:58Z","type":"s","ip":"203.0.113.9"}`
	body := []byte(" [ " + good + " ,\n" + good + "]\n")
	logs, err := DecodePage(body)
	require.NoError(t, err)
	require.Len(t, logs, 2)
	for _, l := range logs {
		require.Equal(t, good, string(l.Raw))
		require.Equal(t, "203.0.113.9", l.IP)
		back, err := Unpack(l.ID, l.Pack(), l.Raw)
		require.NoError(t, err)
		require.Equal(t, l, back, "offsets are relative to the event, not the page")
	}
	logs, err = DecodePage([]byte(`null`))
	require.NoError(t, err)
	require.Empty(t, logs)

	var ee *EventError
	_, err = DecodePage([]byte(`[` + good + `,1]`))
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.Index)
	require.Equal(t, 2, ee.Events)
	_, err = DecodePage([]byte(`{"logs":[]}`))
	require.ErrorContains(t, err, "decode log page: a JSON object, not an array")
}

// Object decodes the whole event from its Members, as a caller that
// builds a map of them would: of a member given twice, the last.
func (l Log) Object() (map[string]any, error) {
	m := map[string]any{}
	err := l.Members(func(mb Member) bool {
		m[mb.Key] = mb.Value()
		return true
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// FuzzObject: Object decodes exactly what encoding/json with UseNumber
// decodes into a map, so the messages the forwarder builds from it are
// byte for byte those it built with encoding/json.
func FuzzObject(f *testing.F) {
	f.Add([]byte(`{"a":1.50,"b":[1e3,-0,{"c":null}],"x\u0000y":"\t","d":true,"e":false,"f":[]}`))
	f.Add([]byte(`{"a":"\ud800\u0041","a":"\u00e9","k\u00e9":{"":""},"s":"` + "\xff\xfe" + `","t":"<b>&amp;</b>"}`))
	f.Add([]byte(`{"n":12345678901234567890,"m":{}}`))
	f.Add([]byte(`[1]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := Log{Raw: raw}.Object()
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var want map[string]any
		werr := dec.Decode(&want)
		if werr == nil {
			if _, terr := dec.Token(); terr != io.EOF {
				werr = errors.New("trailing data")
			}
		}
		if werr == nil && want == nil {
			werr = errors.New("null")
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("Object error %v, encoding/json %v for %q", err, werr, raw)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("Object %#v, encoding/json %#v for %q", got, want, raw)
		}
	})
}
