package store

import (
	"encoding/json"
	"testing"
)

// FuzzEventFields: the one-pass field extraction gives what the
// encoding/json path gives.
func FuzzEventFields(f *testing.F) {
	for _, s := range []string{
		`{"ip":"203.0.113.7","user_id":"auth0|1","user_name":"a@b.cc","client_id":"c","connection":"db"}`,
		`{"ip":null,"user_id":5,"user_name":"x\u0001y","IP":"1.2.3.4"}`,
		`{"ip":"a","ip":"b","connection":{"x":1},"é":"z"}`,
		`{"user_name":"é\ud800"}`, `{}`, `[]`, `{"ip":"a"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got Event
		if !fieldsFast(raw, &got) {
			return
		}
		var fields struct {
			IP         json.RawMessage `json:"ip"`
			UserID     json.RawMessage `json:"user_id"`
			UserName   json.RawMessage `json:"user_name"`
			ClientID   json.RawMessage `json:"client_id"`
			Connection json.RawMessage `json:"connection"`
		}
		if err := json.Unmarshal(raw, &fields); err != nil {
			t.Fatalf("fast path took %q; encoding/json: %v", raw, err)
		}
		var want Event
		for i, v := range []json.RawMessage{fields.IP, fields.UserID, fields.UserName, fields.ClientID, fields.Connection} {
			var s string
			if json.Unmarshal(v, &s) == nil {
				want.Fields[i] = CleanValue(s)
			}
		}
		if got.Fields != want.Fields {
			t.Fatalf("fields of %q: %q, encoding/json path %q", raw, got.Fields, want.Fields)
		}
	})
}
