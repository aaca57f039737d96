package sim

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzSegmentDecode: the decoders give what encoding/json gives, member
// names matched exactly (encoding/json also matches them in other letter
// case: such inputs are left out).
func FuzzSegmentDecode(f *testing.F) {
	for _, s := range []string{
		`{"batch":[{"type":"track","event":"Success Login","userId":"u1","messageId":"m1"}],"writeKey":"k"}`,
		`{"batch":[{"type":"track","anonymousId":null,"userId":"\u0075"}],"writeKey":null}`,
		`{"batch":"x"}`, `{"batch":[1,"a",null,{"messageID":"m"}]}`, `null`, `[]`, `{"batch":[}`,
		`{"batch":[{"type":"track","event":"é","messageId":"m","properties":{"a":[1,{"b":2}]}}],"batch":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if foldedKey(raw) {
			return
		}
		got, gotErr := decodeBatch(raw)
		var want batchBody
		wantErr := json.Unmarshal(raw, &want)
		if (gotErr == nil) != (wantErr == nil) || got.WriteKey != want.WriteKey || len(got.Batch) != len(want.Batch) {
			t.Fatalf("decodeBatch(%q) = %+v, %v; encoding/json %+v, %v", raw, got, gotErr, want, wantErr)
		}
		for i := range got.Batch {
			if string(got.Batch[i]) != string(want.Batch[i]) {
				t.Fatalf("message %d of %q: %q, encoding/json %q", i, raw, got.Batch[i], want.Batch[i])
			}
		}
		h, hErr := decodeHead(raw)
		var wh messageHead
		whErr := json.Unmarshal(raw, &wh)
		if (hErr == nil) != (whErr == nil) || (hErr == nil && !reflect.DeepEqual(norm(h), norm(wh))) {
			t.Fatalf("decodeHead(%q) = %+v, %v; encoding/json %+v, %v", raw, h, hErr, wh, whErr)
		}
	})
}

// norm makes empty and nil raw values compare equal.
func norm(h messageHead) messageHead {
	if len(h.UserID) == 0 {
		h.UserID = nil
	}
	if len(h.AnonymousID) == 0 {
		h.AnonymousID = nil
	}
	return h
}

// foldedKey reports whether raw holds a member name that matches one of the
// decoded fields only in another letter case.
func foldedKey(raw []byte) bool {
	if strings.Contains(string(raw), "\\") {
		return true // an escaped name may spell one too
	}
	lower := strings.ToLower(string(raw))
	for _, name := range []string{"batch", "writeKey", "type", "event", "messageId", "userId", "anonymousId"} {
		if strings.Count(lower, strings.ToLower(name)) != strings.Count(string(raw), name) {
			return true
		}
	}
	return false
}
