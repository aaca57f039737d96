package forward

import (
	"net/netip"
	"strings"
	"testing"
)

// oldKindOf is kindOf as first written (strings.Map), the reference for
// the allocation-free version.
func oldKindOf(key string) fieldKind {
	if len(key) > 32 {
		return freeField
	}
	norm := strings.Map(func(r rune) rune {
		if r == '_' || r == '-' {
			return -1
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, key)
	return namedFields[norm]
}

// FuzzScrubFastPaths: the shortcuts taken before the PII regexps and the
// pooled HMAC answer exactly what the slow paths answer.
func FuzzScrubFastPaths(f *testing.F) {
	for _, s := range []string{
		"", "1.2.3.4", "v10.15.7", "a 1.2.3.4567 b", "12345.1.2.3", "1.2.3.", "1..2.3.4", "9.99.999.9999.1",
		"Chrome 120.0.0 / Mac OS X 10.15.7", "fe80::1", "a:b", "::", "user@example.com", "@", "User_Name", "X-Forwarded-For",
		"ip\xff", "é", strings.Repeat("1.", 40), "fe80::1%eth0", "fe80::1%", "::ffff:1.2.3.4", "1.2.3.4%x", "abc", "dead:beef::",
	} {
		f.Add(s)
	}
	s := newScrubber(testKey, PIIPolicy{})
	f.Fuzz(func(t *testing.T, in string) {
		if got, want := hasDottedQuad(in), ipv4RE.MatchString(in); got != want {
			t.Fatalf("hasDottedQuad(%q) = %v, ipv4RE says %v", in, got, want)
		}
		if strings.Count(in, ":") < 2 && ipRunRE.MatchString(in) {
			t.Fatalf("ipRunRE matches %q with fewer than two colons", in)
		}
		ip, err := netip.ParseAddr(in)
		if got, ok := parseAddr(in); ok != (err == nil) || got != ip {
			t.Fatalf("parseAddr(%q) = %v, %v; netip.ParseAddr says %v, %v", in, got, ok, ip, err)
		}
		if got, want := kindOf(in), oldKindOf(in); got != want {
			t.Fatalf("kindOf(%q) = %v, want %v", in, got, want)
		}
		if got, want := s.hash(in), hashWith(piiKey(testKey), in); got != want {
			t.Fatalf("hash(%q) = %q, want %q", in, got, want)
		}
	})
}
