// Package jsonscan walks JSON documents in one validating pass, without
// decoding them: the members of an object and the elements of an array come
// out as the raw bytes of their values. authpipe's hot paths use it where
// encoding/json would validate a document and then decode it a second time
// through its byte-at-a-time state machine, only to pick a few fields out of
// it (an event's log_id, date and type; a Segment message's messageId).
//
// Guarantee: it accepts exactly the documents json.Valid accepts (the fuzz
// tests compare the two), including encoding/json's nesting limit. It never
// unescapes: a string with escapes or non-ASCII bytes is reported as not
// plain, so that callers leave such values to encoding/json and keep its
// exact decoding rules (escapes, invalid UTF-8, case-insensitive field names).
package jsonscan

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// MaxDepth is encoding/json's nesting limit.
const MaxDepth = 10000

// Valid reports whether data is one valid JSON value, surrounded by white
// space at most: json.Valid, faster.
func Valid(data []byte) bool {
	s := scanner{data: data}
	s.space()
	if !s.value(0) {
		return false
	}
	s.space()
	return s.i == len(s.data)
}

// Members calls fn with each member of the JSON object obj (white space
// around it allowed), in document order: key is the raw bytes between the
// key's quotes, plain reports that key holds no escape and only ASCII, and
// value is the raw bytes of the value. It returns false, after calling fn
// for the members before the error, when obj is not a valid JSON object;
// fn returning false stops the walk early, and Members then returns true
// without having validated the rest.
func Members(obj []byte, fn func(key []byte, plain bool, value []byte) bool) bool {
	s := scanner{data: obj}
	s.space()
	if !s.byte('{') {
		return false
	}
	s.space()
	if !s.byte('}') {
		for {
			s.space()
			key, plain, ok := s.str()
			if !ok {
				return false
			}
			s.space()
			if !s.byte(':') {
				return false
			}
			s.space()
			start := s.i
			if !s.value(1) {
				return false
			}
			if !fn(key, plain, s.data[start:s.i]) {
				return true
			}
			s.space()
			if s.byte(',') {
				continue
			}
			if !s.byte('}') {
				return false
			}
			break
		}
	}
	s.space()
	return s.i == len(s.data)
}

// Elements calls fn with the raw bytes of each element of the JSON array
// arr (white space around it allowed), in order. Like Members, it returns
// false when arr is not a valid JSON array, and fn returning false stops
// the walk.
func Elements(arr []byte, fn func(value []byte) bool) bool {
	s := scanner{data: arr}
	s.space()
	if !s.byte('[') {
		return false
	}
	s.space()
	if !s.byte(']') {
		for {
			s.space()
			start := s.i
			if !s.value(1) {
				return false
			}
			if !fn(s.data[start:s.i]) {
				return true
			}
			s.space()
			if s.byte(',') {
				continue
			}
			if !s.byte(']') {
				return false
			}
			break
		}
	}
	s.space()
	return s.i == len(s.data)
}

// PlainString returns the contents of value when it is a JSON string with
// no escapes and only ASCII or valid UTF-8 — what encoding/json would decode
// it to, byte for byte. ok is false for any other value (null, a number, a
// string that needs unescaping): decode those with encoding/json.
func PlainString(value []byte) (s []byte, ok bool) {
	if len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
		return nil, false
	}
	s = value[1 : len(value)-1]
	ascii := true
	for _, c := range s {
		if c == '\\' || c == '"' || c < 0x20 {
			return nil, false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(s) {
		return nil, false // encoding/json replaces invalid bytes with U+FFFD
	}
	return s, true
}

// IsNull reports whether value is the literal null.
func IsNull(value []byte) bool { return string(value) == "null" }

// scanner walks JSON from data[i], validating it.
type scanner struct {
	data []byte
	i    int
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) byte(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string at s.i and returns the bytes between its quotes,
// whether they hold no escape and only ASCII (plain), and whether the
// string is valid JSON.
func (s *scanner) str() (v []byte, plain, ok bool) {
	if !s.byte('"') {
		return nil, false, false
	}
	start := s.i
	plain = true
	for s.i < len(s.data) {
		c := s.data[s.i]
		if plainByte[c] {
			s.i++
			for s.i+8 <= len(s.data) && plain8(binary.LittleEndian.Uint64(s.data[s.i:])) {
				s.i += 8
			}
			continue
		}
		switch {
		case c == '"':
			v = s.data[start:s.i]
			s.i++
			return v, plain, true
		case c == '\\':
			plain = false
			s.i++
			if s.i >= len(s.data) {
				return nil, false, false
			}
			switch s.data[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+5 > len(s.data) {
					return nil, false, false
				}
				for _, h := range s.data[s.i+1 : s.i+5] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				s.i += 5
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			if c >= utf8.RuneSelf {
				plain = false
			}
			s.i++
		}
	}
	return nil, false, false
}

// plainByte marks the bytes that stand for themselves inside a string:
// ASCII except control characters, '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plain8 reports whether the eight bytes packed in x are all plainByte,
// testing them at once (SWAR): no byte below 0x20, none '"' or '\\', none
// 0x80 or above.
func plain8(x uint64) bool {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	zero := func(v uint64) uint64 { return (v - ones) & ^v & high } // a zero byte in v
	return x&high == 0 &&
		(x-0x20*ones)&^x&high == 0 && // a byte below 0x20
		zero(x^('"'*ones)) == 0 &&
		zero(x^('\\'*ones)) == 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// value reads one value inside depth enclosing containers.
func (s *scanner) value(depth int) bool {
	if s.i >= len(s.data) {
		return false
	}
	switch s.data[s.i] {
	case '"':
		_, _, ok := s.str()
		return ok
	case '{':
		if depth >= MaxDepth {
			return false
		}
		s.i++
		s.space()
		if s.byte('}') {
			return true
		}
		for {
			s.space()
			if _, _, ok := s.str(); !ok {
				return false
			}
			s.space()
			if !s.byte(':') {
				return false
			}
			s.space()
			if !s.value(depth + 1) {
				return false
			}
			s.space()
			if s.byte(',') {
				continue
			}
			return s.byte('}')
		}
	case '[':
		if depth >= MaxDepth {
			return false
		}
		s.i++
		s.space()
		if s.byte(']') {
			return true
		}
		for {
			s.space()
			if !s.value(depth + 1) {
				return false
			}
			s.space()
			if s.byte(',') {
				continue
			}
			return s.byte(']')
		}
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		return s.number()
	}
}

func (s *scanner) literal(lit string) bool {
	if bytes.HasPrefix(s.data[s.i:], []byte(lit)) {
		s.i += len(lit)
		return true
	}
	return false
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	s.byte('-')
	switch {
	case s.byte('0'):
	case s.i < len(s.data) && '1' <= s.data[s.i] && s.data[s.i] <= '9':
		s.digits()
	default:
		return false
	}
	if s.byte('.') && !s.digits() {
		return false
	}
	if s.i < len(s.data) && (s.data[s.i] == 'e' || s.data[s.i] == 'E') {
		s.i++
		if !s.byte('+') {
			s.byte('-')
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits reads one or more digits.
func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.data) && '0' <= s.data[s.i] && s.data[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}
