package forward

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/analytics-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
)

// This file keeps the mapping as it was before it was made faster (commit
// c92a607, "decode the whole event, then scrub it"): the reference the
// mapping must match, message for message. It is written against the
// documented rules, not the optimised code: the event is decoded whole
// with encoding/json (UseNumber), every hash is keyed afresh (hashWith,
// AnonymousID), and the size is json.Marshal's length.

// refMap is Map as it was.
func refMap(tenant string, l auth0log.Log, hashKey []byte, pii PIIPolicy) (analytics.Track, bool, error) {
	s := refScrubber{key: piiKey(hashKey), policy: pii.withDefaults()}
	if tenant == "" {
		return analytics.Track{}, false, &InvalidError{Reason: "empty tenant"}
	}
	if l.Type == "" {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": missing type"}
	}
	if l.Date.IsZero() {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": missing date"}
	}
	props, err := refObject(l.Raw)
	if err != nil {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": " + err.Error()}
	}

	info, known := auth0log.LookupType(l.Type)
	code := l.Type
	if !known {
		code = s.label(l.Type)
		info.Name = code
	}
	t := analytics.Track{
		Type:      "track",
		MessageId: MessageID(tenant, l.ID),
		Event:     info.Name,
		Timestamp: l.Date.UTC(),
	}
	if t.Event == "" {
		t.Event = code
	}

	if uid, ok := props["user_id"].(string); ok && uid != "" {
		t.UserId = uid
		delete(props, "user_id")
	} else {
		kind, value := "log_id", l.ID
		for _, k := range anonymousKinds {
			if s, ok := props[k].(string); ok && s != "" {
				kind, value = k, s
				break
			}
		}
		t.AnonymousId = AnonymousID(hashKey, tenant, kind, value)
	}

	var ctx analytics.Context
	if v, ok := props["ip"].(string); ok && s.policy.IP == PIIKeep {
		if ip := net.ParseIP(v); ip != nil {
			ctx.IP = ip
			delete(props, "ip")
		}
	}
	if v, ok := props["user_agent"].(string); ok && v != "" && s.policy.UserAgent == PIIKeep {
		ctx.UserAgent = v
		delete(props, "user_agent")
	}
	if ctx.IP != nil || ctx.UserAgent != "" {
		t.Context = &ctx
	}
	delete(props, "date")
	if loc, ok := props["location_info"]; ok {
		if loc, ok = s.location(loc); ok {
			props["location_info"] = loc
		} else {
			delete(props, "location_info")
		}
	}
	props = s.object(props)

	props["log_id"] = l.ID
	props["type"] = code
	props["tenant"] = tenant
	props["outcome"] = string(info.Outcome)
	props["group"] = info.Group
	t.Properties = props

	size, err := refSize(t)
	if err != nil {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": encode message: " + err.Error()}
	}
	if size <= MaxMessageBytes {
		return t, false, nil
	}
	if _, ok := props["details"]; !ok {
		return analytics.Track{}, false, &OversizeError{Bytes: size, Limit: MaxMessageBytes}
	}
	delete(props, "details")
	props["details_trimmed"] = true
	if size, err = refSize(t); err != nil {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": encode message: " + err.Error()}
	}
	if size > MaxMessageBytes {
		return analytics.Track{}, false, &OversizeError{Bytes: size, Limit: MaxMessageBytes, DetailsDropped: true}
	}
	return t, true, nil
}

// refSize is what analytics-go measures.
func refSize(t analytics.Track) (int, error) {
	b, err := json.Marshal(t)
	return len(b), err
}

// refObject decodes an event as encoding/json does (auth0log's FuzzObject
// holds Log.Object to the same), with the error texts Log.Object gives.
func refObject(raw []byte) (map[string]any, error) {
	if !json.Valid(raw) {
		return nil, errors.New("decode event: not valid JSON")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, errors.New("event is not a JSON object")
	}
	return m, nil
}

// refScrubber is the PII scrubber as it was, hashing with hashWith.
type refScrubber struct {
	key    []byte
	policy PIIPolicy
}

func (s refScrubber) hash(v string) string { return hashWith(s.key, v) }

func (s refScrubber) action(kind fieldKind, v any) PIIAction {
	switch kind {
	case userNameField:
		if str, ok := v.(string); ok && refIsEmail(str) {
			return stricter(s.policy.UserName, s.policy.Email)
		}
		return s.policy.UserName
	case emailField:
		return s.policy.Email
	case ipField:
		return s.policy.IP
	case userAgentField:
		return s.policy.UserAgent
	}
	return PIIKeep
}

func (s refScrubber) object(m map[string]any) map[string]any {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string]any, len(m))
	for _, k := range keys {
		nk, keepKey := s.text(k)
		if !keepKey {
			continue
		}
		if _, taken := out[nk]; taken {
			continue
		}
		if v, ok := s.fieldValue(refKindOf(k), m[k]); ok {
			out[nk] = v
		}
	}
	return out
}

func (s refScrubber) fieldValue(kind fieldKind, v any) (any, bool) {
	if kind == freeField {
		return s.value(v)
	}
	switch s.action(kind, v) {
	case PIIDrop:
		return nil, false
	case PIIHash:
		return s.hashAll(v), true
	default:
		return v, true
	}
}

func (s refScrubber) hashAll(v any) any {
	switch x := v.(type) {
	case string:
		return s.hash(x)
	case json.Number:
		return s.hash(x.String())
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make(map[string]any, len(x))
		for _, k := range keys {
			nk, keepKey := s.text(k)
			if _, taken := out[nk]; keepKey && !taken {
				out[nk] = s.hashAll(x[k])
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.hashAll(e)
		}
		return out
	}
	return v
}

func (s refScrubber) value(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		return s.text(x)
	case map[string]any:
		return s.object(x), true
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			if e, ok := s.value(e); ok {
				out = append(out, e)
			}
		}
		return out, true
	}
	return v, true
}

func (s refScrubber) text(t string) (string, bool) {
	if s.policy.Email != PIIKeep && refIsEmail(t) {
		return s.whole(s.policy.Email, t)
	}
	if s.policy.IP != PIIKeep {
		if _, ok := parseAddr(t); ok {
			return s.whole(s.policy.IP, t)
		}
	}
	for {
		changed := false
		if s.policy.Email != PIIKeep {
			t = s.replace(emailRE, t, s.policy.Email, "[email]", nil, &changed)
		}
		if s.policy.IP != PIIKeep {
			t = s.replace(ipRunRE, t, s.policy.IP, "[ip]", ipv6Core, &changed)
			t = s.replace(ipv4RE, t, s.policy.IP, "[ip]", nil, &changed)
		}
		if !changed {
			return t, true
		}
	}
}

func (s refScrubber) whole(a PIIAction, t string) (string, bool) {
	if a == PIIDrop {
		return "", false
	}
	return s.hash(t), true
}

func (s refScrubber) replace(re *regexp.Regexp, t string, a PIIAction, marker string,
	core func(string) (start, end int, ok bool), changed *bool) string {
	return re.ReplaceAllStringFunc(t, func(m string) string {
		start, end := 0, len(m)
		if core != nil {
			var ok bool
			if start, end, ok = core(m); !ok {
				return m
			}
		}
		*changed = true
		if a == PIIDrop {
			return m[:start] + marker + m[end:]
		}
		return m[:start] + s.hash(m[start:end]) + m[end:]
	})
}

func (s refScrubber) location(v any) (any, bool) {
	switch s.policy.IP {
	case PIIKeep:
		return v, true
	case PIIDrop:
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	out := map[string]any{}
	for _, k := range coarseLocation {
		if x, ok := m[k]; ok {
			out[k] = x
		}
	}
	return out, true
}

func (s refScrubber) label(t string) string {
	out, ok := s.text(t)
	if ok {
		return out
	}
	if refIsEmail(t) {
		return "[email]"
	}
	return "[ip]"
}

func refIsEmail(s string) bool {
	loc := emailRE.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}

// refKindOf is kindOf as first written (fastpath_test.go).
func refKindOf(key string) fieldKind { return oldKindOf(key) }

// refPolicies: every combination of actions for the four kinds of data.
func refPolicies() []PIIPolicy {
	actions := []PIIAction{PIIKeep, PIIHash, PIIDrop}
	var out []PIIPolicy
	for _, u := range actions {
		for _, e := range actions {
			for _, i := range actions {
				for _, a := range actions {
					out = append(out, PIIPolicy{UserName: u, Email: e, IP: i, UserAgent: a})
				}
			}
		}
	}
	return append(out, PIIPolicy{}) // zero: every field hashed
}

// refOddEvents are events written to reach every branch of the mapping:
// location_info, nested details with addresses in keys and values,
// escapes, unicode, invalid UTF-8, big and odd numbers, members given
// twice, nulls, identities of every kind, keys that scrub to one another.
func refOddEvents() [][]byte {
	id := testLogID
	head := `{"log_id":"` + id + `","date":"2026-11-25T10:14:58.123Z",`
	return [][]byte{
		[]byte(head + `"type":"s","user_id":"auth0|abc","user_name":"Alice@Example.com","ip":"203.0.113.7","user_agent":"Chrome 120.0.0 / Mac OS X 10.15.7","description":"Login by alice@example.com from 198.51.100.4","location_info":{"country_code":"DE","country_code3":"DEU","country_name":"Germany","continent_code":"EU","city_name":"Berlin","latitude":52.52,"longitude":13.4,"time_zone":"Europe/Berlin"},"details":{"email":"alice@example.com","request":{"ip":"2001:db8::5","headers":{"user-agent":"curl/8.5.0","x-forwarded-for":"198.51.100.4, 203.0.113.7"}},"contacts":["carol@example.org","note",7,null,true],"body":{"username":"alice","User_Name":"bob@example.com"}}}`),
		[]byte(head + `"type":"fp","description":"<b>&amp;</b> \u2028 \u00e9 \ud800","details":{"z":1.50,"a":[1e3,-0,{"b":null}],"x\u0000y":"\t"},"n":12345678901234567890,"m":-1.25E-7,"u":"日本語 ✓ 😀"}`),
		[]byte(head + `"type":"zz_unknown","ip":"2001:db8::1","user_agent":"curl/8","user_name":"A@Example.COM"}`),
		[]byte(head + `"type":"s","user_agent":"<<<\u0001\u0001","k\u0001":["\u0002",[true,false,null,1]],"b":"` + "\xff\xfe" + `","user_id":"u\u00e9"}`),
		[]byte(head + `"type":"fu","user_id":"","user_name":"mallory@example.com","ip":"198.51.100.9","client_id":"cid"}`),
		[]byte(head + `"type":"f","ip":"2001:db8::1","client_id":"c"}`),
		[]byte(head + `"type":"f","client_id":"cid-1","user_name":""}`),
		[]byte(head + `"type":"f"}`),
		[]byte(head + `"type":"s","user_id":42,"user_name":"bob"}`),
		[]byte(head + `"type":"s","user_id":null,"user_name":null,"ip":null,"user_agent":null,"client_id":null,"location_info":null,"details":null}`),
		[]byte(head + `"type":"f","ip":"not-an-ip","user_agent":"curl"}`),
		[]byte(head + `"type":"f","ip":["1.2.3.4"],"user_agent":{"ua":"x"},"location_info":"Berlin","user_name":{"n":"e@f.gg"}}`),
		[]byte(head + `"type":"s","user_id":"u","tenant":"spoof","outcome":"x","group":"g","log_id":"` + id + `","details_trimmed":false}`),
		[]byte(head + `"type":"s","user_id":"u","user_id":"v","ip":"1.2.3.4","ip":"5.6.7.8","user_name":"a@b.cc","user_name":"x","details":{"a":1,"a":"c@d.ee"},"k":1,"k":null,"s":"x","s":"c@d.ee","n":"e@f.gg","n":"y","username":"p","username":"q@r.st"}`),
		[]byte(head + `"type":"s","user_id":"","user_id":"w","ip":"1.2.3.4","ip":7}`),
		[]byte(head + `"type":"s","user_id":"u","bob@example.com":true,"seen by 203.0.113.7":1,"h:` + strings.TrimPrefix(HashPII(testKey, "x@y.zz"), "h:") + `":"taken","x@y.zz":"second","1.2.3.4":"ip key"}`),
		[]byte(head + `"type":"eve@example.com","user_id":"u"}`),
		[]byte(head + `"type":"203.0.113.9","user_id":"u"}`),
		[]byte(head + `"type":"s","user_id":"u","details":{"c@d.ee":["2001:db8::1","p@q.ra@b.cc"],"x-forwarded-for":"1.1.1.1, ::1","deep":{"deeper":{"email_address":["a@b.cc",{"k":"v"}],"remote-addr":"::ffff:1.2.3.4"}}}}`),
		[]byte(head + `"type":"s","user_id":"u","details":{"email":{"nested":"x@y.zz","n":12},"ip":[1,"2.3.4.5"],"username":1.5,"user_agent":false}}`),
		[]byte(head + `"type":"s","user_id":"u","escaped\"key":"\"quoted\" \\ \/ \b\f\n\r\t","\u0075ser_name":"escaped@key.com"}`),
		[]byte(head + `"type":"s","user_id":"u","d":"mailto:bob@example.com?subject=x id=x1::2:zz 203.0.113.7:8443 1.2.3.4.5.6.7.8.9","e":"@auth0/auth0-spa-js aa:bb:cc:dd:ee:ff v10.15.7"}`),
		[]byte(head + `"type":"s","user_id":"u","details":{"body":"` + strings.Repeat("<", 5400) + `"}}`),
		[]byte(head + `"type":"s","user_id":"u","details":{"body":"` + strings.Repeat("x", 33000) + `"}}`),
		[]byte(head + `"type":"s","user_id":"u","security_context":"` + strings.Repeat("x", 33000) + `"}`),
		[]byte(head + `"type":"s","user_id":"u","security_context":"` + strings.Repeat("x", 33000) + `","details":{"a":"b"}}`),
		[]byte(head + `"type":"s","user_id":"u","details":"` + strings.Repeat("a@b.cc ", 2000) + `"}`),
		[]byte(head + `"type":"s","user_id":"u","pad":"` + strings.Repeat("é", 15000) + `","details":{}}`),
		[]byte(head + `"type":"s","user_id":"u","arr":[],"obj":{},"emptykey":{"":""},"":"empty key"}`),
		[]byte(`{"log_id":"` + id + `","date":"2025-01-02T03:04:05.999999999+02:00","type":"zz","ip":"::ffff:1.2.3.4","user_agent":7}`),
		[]byte(head + `"type":"s"} {}`),
		[]byte(`[1]`),
	}
}

// refCorpus is the events the mapping is compared on: the simulator's
// traffic (every type it generates), then refOddEvents.
func refCorpus(t testing.TB) []auth0log.Log {
	t.Helper()
	var logs []auth0log.Log
	for seed := range uint64(3) {
		gen, err := sim.GenerateLogs(rand.New(rand.NewPCG(seed, 42)), 400, time.Now().Add(-time.Hour), time.Millisecond)
		require.NoError(t, err)
		logs = append(logs, gen...)
	}
	date := time.Date(2026, 11, 25, 10, 14, 58, 123e6, time.UTC)
	for _, raw := range refOddEvents() {
		l, err := auth0log.Decode(raw)
		if err != nil {
			// Map is also given what Decode refuses (a damaged entry).
			l = auth0log.Log{ID: testLogID, Date: date, Type: "s", Raw: raw}
		}
		logs = append(logs, l)
	}
	return logs
}

// requireSameMapping maps l with the mapper and with refMap and requires
// the same outcome: the same Track (Go values and types, so the same JSON
// byte for byte), the same trimming, the same error.
func requireSameMapping(t testing.TB, tenant string, l auth0log.Log, policy PIIPolicy) {
	t.Helper()
	want, wantTrimmed, wantErr := refMap(tenant, l, testKey, policy)
	got, trimmed, err := newMapper(tenant, testKey, policy).mapLog(l)
	if wantErr != nil || err != nil {
		require.Equal(t, wantErr, err, "policy %+v, event %.300s", policy, l.Raw)
		return
	}
	require.Equal(t, wantTrimmed, trimmed, "policy %+v, event %.300s", policy, l.Raw)
	require.Equal(t, mustJSON(t, want), mustJSON(t, got), "policy %+v, event %.300s", policy, l.Raw)
	require.Equal(t, want, got, "policy %+v, event %.300s", policy, l.Raw)
}

// TestMapMatchesReference: the mapping gives exactly the messages (and
// errors) the reference mapping gives, for the simulator's traffic under
// the default, keep-all and drop-all policies, and for refOddEvents under
// every combination of policies.
func TestMapMatchesReference(t *testing.T) {
	logs := refCorpus(t)
	odd := len(refOddEvents())
	for i, l := range logs {
		policies := []PIIPolicy{{}, keepAll, dropAll, {UserName: PIIKeep}, {IP: PIIKeep, UserAgent: PIIKeep}}
		if i >= len(logs)-odd {
			policies = refPolicies()
		}
		for _, p := range policies {
			requireSameMapping(t, "acme", l, p)
		}
	}
	// A tenant name long enough to hash in the messageId.
	requireSameMapping(t, strings.Repeat("t", 64), logs[0], PIIPolicy{})
	requireSameMapping(t, "", logs[0], PIIPolicy{})
}

// FuzzMapMatchesReference: the same on events the fuzzer makes up.
func FuzzMapMatchesReference(f *testing.F) {
	for _, raw := range refOddEvents() {
		if len(raw) < 4096 {
			f.Add(raw, uint8(0))
		}
	}
	policies := refPolicies()
	date := time.Date(2026, 11, 25, 10, 14, 58, 123e6, time.UTC)
	f.Fuzz(func(t *testing.T, raw []byte, policy uint8) {
		l, err := auth0log.Decode(raw)
		if err != nil {
			l = auth0log.Log{ID: testLogID, Date: date, Type: "s", Raw: raw}
		}
		requireSameMapping(t, "acme", l, policies[int(policy)%len(policies)])
	})
}
