package jsonscan

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"
)

// Decode decodes one JSON value (white space around it allowed) to what
// encoding/json's Decoder with UseNumber gives for an `any`: map[string]any,
// []any (non-nil, also when empty), string, json.Number, bool or nil;
// duplicate keys keep the last value. ok is false when data is not valid
// JSON. Strings with escapes or invalid UTF-8 are unquoted by encoding/json,
// so every string is exactly what encoding/json would produce.
func Decode(data []byte) (v any, ok bool) {
	d := decoder{scanner: scanner{data: data}}
	d.space()
	v, ok = d.value(0)
	if !ok {
		return nil, false
	}
	d.space()
	return v, d.i == len(d.data)
}

type decoder struct{ scanner }

func (d *decoder) value(depth int) (any, bool) {
	if d.i >= len(d.data) {
		return nil, false
	}
	switch d.data[d.i] {
	case '"':
		return d.string()
	case '{':
		if depth >= MaxDepth {
			return nil, false
		}
		d.i++
		m := map[string]any{}
		d.space()
		if d.byte('}') {
			return m, true
		}
		for {
			d.space()
			k, ok := d.string()
			if !ok {
				return nil, false
			}
			d.space()
			if !d.byte(':') {
				return nil, false
			}
			d.space()
			v, ok := d.value(depth + 1)
			if !ok {
				return nil, false
			}
			m[k] = v
			d.space()
			if d.byte(',') {
				continue
			}
			if !d.byte('}') {
				return nil, false
			}
			return m, true
		}
	case '[':
		if depth >= MaxDepth {
			return nil, false
		}
		d.i++
		a := []any{}
		d.space()
		if d.byte(']') {
			return a, true
		}
		for {
			d.space()
			v, ok := d.value(depth + 1)
			if !ok {
				return nil, false
			}
			a = append(a, v)
			d.space()
			if d.byte(',') {
				continue
			}
			if !d.byte(']') {
				return nil, false
			}
			return a, true
		}
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	case 'n':
		return nil, d.literal("null")
	default:
		start := d.i
		if !d.number() {
			return nil, false
		}
		return json.Number(d.data[start:d.i]), true
	}
}

// string reads a string and returns it unquoted.
func (d *decoder) string() (string, bool) {
	start := d.i
	v, plain, ok := d.str()
	if !ok {
		return "", false
	}
	if plain {
		return string(v), true
	}
	if s, ok := PlainString(d.data[start:d.i]); ok {
		return string(s), true // valid UTF-8, no escapes
	}
	var s string
	if err := json.Unmarshal(d.data[start:d.i], &s); err != nil {
		return "", false // unreachable: the string is valid
	}
	return s, true
}

// AppendJSON appends what json.Marshal(v) gives, for v built of the types
// Decode returns: map[string]any, []any, string, json.Number, bool and nil.
// ok is false for any other type (or an invalid json.Number): use
// encoding/json for those.
func AppendJSON(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case string:
		return appendString(dst, x), true
	case bool:
		if x {
			return append(dst, "true"...), true
		}
		return append(dst, "false"...), true
	case json.Number:
		s := string(x)
		if s == "" {
			s = "0"
		}
		if sc := (scanner{data: []byte(s)}); !sc.number() || sc.i != len(s) {
			return dst, false
		}
		return append(dst, s...), true
	case map[string]any:
		if x == nil {
			return append(dst, "null"...), true
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, strings.Compare)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			var ok bool
			if dst, ok = AppendJSON(dst, x[k]); !ok {
				return dst, false
			}
		}
		return append(dst, '}'), true
	case []any:
		if x == nil {
			return append(dst, "null"...), true
		}
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = AppendJSON(dst, e); !ok {
				return dst, false
			}
		}
		return append(dst, ']'), true
	}
	return dst, false
}

const hexDigits = "0123456789abcdef"

// appendString is encoding/json's appendString with HTML escaping (what
// json.Marshal does).
func appendString(dst []byte, src string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(src); {
		if b := src[i]; b < utf8.RuneSelf {
			if htmlSafe[b] {
				i++
				continue
			}
			dst = append(dst, src[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(src[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, src[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, src[start:]...)
	return append(dst, '"')
}

// htmlSafe marks the ASCII bytes json.Marshal writes as they are.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// EncodedLen returns len(json.Marshal(v)) for v built of the types Decode
// returns, without encoding: the length does not depend on the order of
// object keys, so nothing is sorted or written. ok is false where AppendJSON
// would be false.
func EncodedLen(v any) (n int, ok bool) {
	switch x := v.(type) {
	case nil:
		return len("null"), true
	case string:
		return stringLen(x), true
	case bool:
		if x {
			return len("true"), true
		}
		return len("false"), true
	case json.Number:
		b, ok := AppendJSON(nil, x)
		return len(b), ok
	case map[string]any:
		if x == nil {
			return len("null"), true
		}
		n = 2 + max(len(x)-1, 0) // braces and commas
		for k, e := range x {
			m, ok := EncodedLen(e)
			if !ok {
				return 0, false
			}
			n += stringLen(k) + 1 + m
		}
		return n, true
	case []any:
		if x == nil {
			return len("null"), true
		}
		n = 2 + max(len(x)-1, 0)
		for _, e := range x {
			m, ok := EncodedLen(e)
			if !ok {
				return 0, false
			}
			n += m
		}
		return n, true
	}
	return 0, false
}

// stringLen is len(appendString(nil, s)).
func stringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			switch {
			case htmlSafe[b]:
				n++
			case b == '\\' || b == '"' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			n += len(`\ufffd`)
		case c == '\u2028' || c == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
