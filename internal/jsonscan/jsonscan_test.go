package jsonscan

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var seeds = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `false`, `null`, ` {"a" : [1, 2 ,{"b":null}] } `,
	`{"a":"\u00e9\n\"\\\/\b\f\r\t"}`, `{"é":"ü"}`, "{\"a\":\"\xff\"}", `{"a":01}`, `{"a":1.}`, `{"a":.5}`,
	`{"a":1e}`, `{"a":-}`, `{"a":tru}`, `{"a":nulll}`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a":"\x"}`,
	`{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":1}x`, `{"a":1}{}`, "\t[\n]\r", `"abc`, `{`, `[`, ``, ` `,
	strings.Repeat(`[`, MaxDepth) + strings.Repeat(`]`, MaxDepth),
	strings.Repeat(`[`, MaxDepth+1) + strings.Repeat(`]`, MaxDepth+1),
	strings.Repeat(`{"a":`, MaxDepth) + `1` + strings.Repeat(`}`, MaxDepth),
	strings.Repeat(`{"a":`, MaxDepth+1) + `1` + strings.Repeat(`}`, MaxDepth+1),
}

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range seeds {
		require.Equal(t, json.Valid([]byte(s)), Valid([]byte(s)), "%.80q", s)
	}
}

func FuzzValid(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := Valid(data), json.Valid(data); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid = %v", data, got, want)
		}
		checkMembers(t, data)
		checkElements(t, data)
		var s string
		if v, ok := PlainString(data); ok {
			if err := json.Unmarshal(data, &s); err != nil || s != string(v) {
				t.Fatalf("PlainString(%q) = %q; encoding/json: %q, %v", data, v, s, err)
			}
		}
	})
}

func checkMembers(t *testing.T, data []byte) {
	var keys [][]byte
	var plains []bool
	var values [][]byte
	ok := Members(data, func(k []byte, plain bool, v []byte) bool {
		keys, plains, values = append(keys, k), append(plains, plain), append(values, v)
		return true
	})
	valid := json.Valid(data) && bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{"))
	if ok != valid {
		t.Fatalf("Members(%q) ok = %v, want %v", data, ok, valid)
	}
	if !ok {
		return
	}
	for i, k := range keys {
		var want string
		if err := json.Unmarshal(append(append([]byte(`"`), k...), '"'), &want); err != nil {
			t.Fatalf("key %q of %q: %v", k, data, err)
		}
		if plains[i] && want != string(k) {
			t.Fatalf("plain key %q of %q decodes to %q", k, data, want)
		}
		if !json.Valid(values[i]) {
			t.Fatalf("value %q of %q is not valid", values[i], data)
		}
	}
}

func checkElements(t *testing.T, data []byte) {
	var got []json.RawMessage
	ok := Elements(data, func(v []byte) bool { got = append(got, v); return true })
	var want []json.RawMessage
	isArray := bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("["))
	err := json.Unmarshal(data, &want)
	if ok != (err == nil && isArray) {
		t.Fatalf("Elements(%q) ok = %v, encoding/json: %v", data, ok, err)
	}
	if !ok {
		return
	}
	require.Equal(t, len(want), len(got))
	for i := range want {
		if !bytes.Equal(want[i], got[i]) {
			t.Fatalf("element %d of %q: %q, encoding/json %q", i, data, got[i], want[i])
		}
	}
}

func TestMembersAndElements(t *testing.T) {
	var got []string
	require.True(t, Members([]byte(` {"a" : 1, "b\n":[2, {"c":3}], "é":"x"} `), func(k []byte, plain bool, v []byte) bool {
		got = append(got, string(k)+"|"+string(v)+"|"+map[bool]string{true: "plain", false: "escaped"}[plain])
		return true
	}))
	require.Equal(t, []string{`a|1|plain`, `b\n|[2, {"c":3}]|escaped`, `é|"x"|escaped`}, got)

	require.False(t, Members([]byte(`[1]`), func([]byte, bool, []byte) bool { return true }))
	require.False(t, Members([]byte(`{"a":1`), func([]byte, bool, []byte) bool { return true }))

	got = nil
	require.True(t, Elements([]byte(`[ 1 , "a" , {"b":[]} ]`), func(v []byte) bool {
		got = append(got, string(v))
		return true
	}))
	require.Equal(t, []string{`1`, `"a"`, `{"b":[]}`}, got)

	n := 0
	require.True(t, Elements([]byte(`[1,2,3,garbage`), func([]byte) bool { n++; return n < 2 }), "stopping early skips the rest")
}

func TestPlainString(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{`"abc"`, "abc", true},
		{`"é"`, "é", true},
		{"\"\xff\"", "", false},
		{`"a\"b"`, "", false},
		{`"\u0061"`, "", false},
		{`null`, "", false},
		{`1`, "", false},
		{`"`, "", false},
	} {
		got, ok := PlainString([]byte(tc.in))
		require.Equal(t, tc.ok, ok, tc.in)
		require.Equal(t, tc.want, string(got), tc.in)
	}
}

func BenchmarkValid(b *testing.B) {
	doc := []byte(`{"log_id":"90020261125101500123456789012345678901234567890123456789","date":"2026-11-25T10:14:58.123Z","type":"s","description":"Successful login","connection":"Username-Password-Authentication","client_id":"kJ8bW2xQ9mZt4LpR7vYc3NdE6sHfA1gU","client_name":"Storefront Web","ip":"203.0.113.7","user_agent":"Chrome 120.0.0 / Mac OS X 10.15.7","isMobile":false,"user_id":"auth0|0000000000000000abcdef01","user_name":"user001@example.com","details":{"session_id":"abcdefghijklmnopqrstuvwxyz012345","stats":{"loginsCount":42}},"tenant_name":"acme"}`)
	b.Run("jsonscan", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		b.ReportAllocs()
		for b.Loop() {
			if !Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		b.ReportAllocs()
		for b.Loop() {
			if !json.Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
}

// FuzzCodec: Decode gives what encoding/json with UseNumber gives, and
// AppendJSON of it gives what json.Marshal gives.
func FuzzCodec(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"b":1,"a":[true,false,null,"<&>\u2028\u0001é"],"a":{"z":1.5e3,"y":"\ud800"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := Decode(data)
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var want any
		err := dec.Decode(&want)
		if err == nil {
			if _, terr := dec.Token(); terr != io.EOF {
				err = io.ErrUnexpectedEOF // trailing data: not one value
			}
		}
		if ok != (err == nil) {
			t.Fatalf("Decode(%q) ok = %v; encoding/json: %v", data, ok, err)
		}
		if !ok {
			return
		}
		require.Equal(t, want, got, "%q", data)
		enc, ok := AppendJSON(nil, got)
		require.True(t, ok)
		wantEnc, err := json.Marshal(want)
		require.NoError(t, err)
		require.Equal(t, string(wantEnc), string(enc), "%q", data)
		n, ok := EncodedLen(got)
		require.True(t, ok)
		require.Equal(t, len(wantEnc), n, "%q", data)
	})
}

// FuzzPlain8: the eight-at-a-time test agrees with the table, byte by byte.
func FuzzPlain8(f *testing.F) {
	f.Add(uint64(0x6162636465666768))
	f.Add(uint64(0x2261626364656667))
	f.Add(uint64(0x1f20202020202020))
	f.Fuzz(func(t *testing.T, x uint64) {
		want := true
		for i := range 8 {
			want = want && plainByte[byte(x>>(8*i))]
		}
		if got := plain8(x); got != want {
			t.Fatalf("plain8(%#x) = %v, bytes say %v", x, got, want)
		}
	})
}
