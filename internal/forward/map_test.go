package forward

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/analytics-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

const testLogID = "90020250102030405000000000000000000000000000000000000042"

// decodeLog builds a log from fields, as the buffer would hold it.
func decodeLog(t testing.TB, fields map[string]any) auth0log.Log {
	t.Helper()
	if _, ok := fields["log_id"]; !ok {
		fields["log_id"] = testLogID
	}
	if _, ok := fields["date"]; !ok {
		fields["date"] = "2025-01-02T03:04:01.123Z"
	}
	raw, err := json.Marshal(fields)
	require.NoError(t, err)
	l, err := auth0log.Decode(raw)
	require.NoError(t, err)
	return l
}

func TestMap(t *testing.T) {
	date := time.Date(2025, 1, 2, 3, 4, 1, 123e6, time.UTC)
	tests := []struct {
		name   string
		fields map[string]any
		check  func(t *testing.T, tr analytics.Track)
	}{
		{
			name: "success login with user_id",
			fields: map[string]any{
				"type": "s", "user_id": "auth0|abc", "user_name": "alice@example.com",
				"ip": "203.0.113.7", "user_agent": "Chrome 120", "client_id": "cid",
				"details":     map[string]any{"prompts": []any{1, 2}},
				"tenant_name": "acme", "isMobile": false,
			},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, "auth0|abc", tr.UserId)
				require.Empty(t, tr.AnonymousId)
				require.Equal(t, "Success Login", tr.Event)
				require.Equal(t, "203.0.113.7", tr.Context.IP.String())
				require.Equal(t, "Chrome 120", tr.Context.UserAgent)
				p := tr.Properties
				for _, k := range []string{"date", "ip", "user_agent", "user_id"} {
					require.NotContains(t, p, k)
				}
				require.Equal(t, "alice@example.com", p["user_name"])
				require.Equal(t, "acme", p["tenant_name"])
				require.Equal(t, false, p["isMobile"])
				require.Equal(t, "success", p["outcome"])
				require.Equal(t, "login_success", p["group"])
				require.Contains(t, p, "details")
			},
		},
		{
			name: "unknown user: anonymous by user_name, empty user_id kept",
			fields: map[string]any{
				"type": "fu", "user_id": "", "user_name": "mallory@example.com", "ip": "198.51.100.9",
			},
			check: func(t *testing.T, tr analytics.Track) {
				require.Empty(t, tr.UserId)
				require.Equal(t, AnonymousID(testKey, "acme", "user_name", "mallory@example.com"), tr.AnonymousId)
				require.Equal(t, "Failed Login (Invalid Email/Username)", tr.Event)
				require.Equal(t, "", tr.Properties["user_id"])
				require.Equal(t, "failure", tr.Properties["outcome"])
				require.Equal(t, "login_failure", tr.Properties["group"])
				require.NotContains(t, tr.Properties, "ip")
			},
		},
		{
			name:   "anonymous by ip",
			fields: map[string]any{"type": "f", "ip": "2001:db8::1"},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, AnonymousID(testKey, "acme", "ip", "2001:db8::1"), tr.AnonymousId)
				require.Equal(t, "2001:db8::1", tr.Context.IP.String())
			},
		},
		{
			name:   "anonymous by client_id",
			fields: map[string]any{"type": "f", "client_id": "cid-1", "user_name": ""},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, AnonymousID(testKey, "acme", "client_id", "cid-1"), tr.AnonymousId)
				require.Nil(t, tr.Context)
			},
		},
		{
			name:   "anonymous by log_id as last resort",
			fields: map[string]any{"type": "f"},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, AnonymousID(testKey, "acme", "log_id", testLogID), tr.AnonymousId)
			},
		},
		{
			name:   "non-string user_id is not an identity",
			fields: map[string]any{"type": "s", "user_id": 42, "user_name": "bob"},
			check: func(t *testing.T, tr analytics.Track) {
				require.Empty(t, tr.UserId)
				require.Equal(t, AnonymousID(testKey, "acme", "user_name", "bob"), tr.AnonymousId)
				require.Equal(t, json.Number("42"), tr.Properties["user_id"])
			},
		},
		{
			name:   "unparseable ip stays in properties",
			fields: map[string]any{"type": "f", "ip": "not-an-ip", "user_agent": "curl"},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, "not-an-ip", tr.Properties["ip"])
				require.Nil(t, tr.Context.IP)
				require.Equal(t, "curl", tr.Context.UserAgent)
			},
		},
		{
			name:   "unknown type code",
			fields: map[string]any{"type": "zz_brand_new", "user_id": "u"},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, "zz_brand_new", tr.Event)
				require.Equal(t, "info", tr.Properties["outcome"])
				require.Equal(t, "unknown", tr.Properties["group"])
			},
		},
		{
			name:   "numbers kept exact",
			fields: map[string]any{"type": "s", "user_id": "u", "big": json.Number("12345678901234567890123")},
			check: func(t *testing.T, tr analytics.Track) {
				b, err := json.Marshal(tr)
				require.NoError(t, err)
				require.Contains(t, string(b), `"big":12345678901234567890123`)
			},
		},
		{
			name:   "raw fields named like the added ones are overwritten",
			fields: map[string]any{"type": "s", "user_id": "u", "tenant": "spoof", "outcome": "x"},
			check: func(t *testing.T, tr analytics.Track) {
				require.Equal(t, "acme", tr.Properties["tenant"])
				require.Equal(t, "success", tr.Properties["outcome"])
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := decodeLog(t, tc.fields)
			tr, err := Map("acme", l, testKey, keepAll)
			require.NoError(t, err)
			require.Equal(t, "track", tr.Type)
			require.Equal(t, "acme-"+testLogID, tr.MessageId)
			require.Equal(t, date, tr.Timestamp)
			require.Equal(t, testLogID, tr.Properties["log_id"])
			require.Equal(t, l.Type, tr.Properties["type"])
			require.Equal(t, "acme", tr.Properties["tenant"])
			require.NoError(t, tr.Validate())
			tc.check(t, tr)

			again, err := Map("acme", l, testKey, keepAll)
			require.NoError(t, err)
			require.Equal(t, mustJSON(t, tr), mustJSON(t, again), "Map is deterministic")
		})
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestMapSizeGuard(t *testing.T) {
	big := strings.Repeat("x", MaxMessageBytes)
	tests := []struct {
		name       string
		fields     map[string]any
		wantErr    string
		wantDetail bool // details kept
	}{
		{
			name:       "small message keeps details",
			fields:     map[string]any{"type": "s", "user_id": "u", "details": map[string]any{"a": "b"}},
			wantDetail: true,
		},
		{
			name:   "big details are dropped",
			fields: map[string]any{"type": "s", "user_id": "u", "details": map[string]any{"body": big}},
		},
		{
			name:    "too big without details",
			fields:  map[string]any{"type": "s", "user_id": "u", "security_context": big},
			wantErr: "bytes (no details to drop); limit 32000",
		},
		{
			name:    "too big even after dropping details",
			fields:  map[string]any{"type": "s", "user_id": "u", "security_context": big, "details": big},
			wantErr: "bytes after dropping details; limit 32000",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Map("acme", decodeLog(t, tc.fields), testKey, PIIPolicy{})
			if tc.wantErr != "" {
				var oe *OversizeError
				require.ErrorAs(t, err, &oe)
				require.Contains(t, err.Error(), tc.wantErr)
				require.Greater(t, oe.Bytes, MaxMessageBytes)
				require.True(t, strings.HasPrefix(err.Error(), "oversize: "))
				return
			}
			require.NoError(t, err)
			require.LessOrEqual(t, len(mustJSON(t, tr)), MaxMessageBytes)
			if tc.wantDetail {
				require.Contains(t, tr.Properties, "details")
				require.NotContains(t, tr.Properties, "details_trimmed")
			} else {
				require.NotContains(t, tr.Properties, "details")
				require.Equal(t, true, tr.Properties["details_trimmed"])
			}
		})
	}
}

// TestMapInvalid: logs Map cannot turn into a valid message. (A log_id is
// validated where the event is decoded, auth0log.Decode, and the buffer
// keeps only valid ones: auth0log's TestDecodeRejects, the buffer's
// conformance suite and TestEntryLog cover it.)
func TestMapInvalid(t *testing.T) {
	good := decodeLog(t, map[string]any{"type": "s", "user_id": "u"})
	tests := []struct {
		name   string
		tenant string
		log    auth0log.Log
	}{
		{"empty tenant", "", good},
		{"no date", "acme", auth0log.Log{ID: good.ID, Type: "s", Raw: good.Raw}},
		{"no type", "acme", auth0log.Log{ID: good.ID, Date: good.Date, Raw: good.Raw}},
		{"raw not an object", "acme", auth0log.Log{ID: good.ID, Date: good.Date, Type: "s", Raw: []byte(`[1]`)}},
		{"raw null", "acme", auth0log.Log{ID: good.ID, Date: good.Date, Type: "s", Raw: []byte(`null`)}},
		{"trailing data", "acme", auth0log.Log{ID: good.ID, Date: good.Date, Type: "s", Raw: []byte(`{} {}`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Map(tc.tenant, tc.log, testKey, PIIPolicy{})
			var ie *InvalidError
			require.ErrorAs(t, err, &ie)
			require.True(t, strings.HasPrefix(err.Error(), "invalid: "), err.Error())
		})
	}
}

func TestMessageID(t *testing.T) {
	require.Equal(t, "acme-"+testLogID, MessageID("acme", testLogID))
	long := strings.Repeat("t", 64)
	id := MessageID(long, testLogID)
	require.Less(t, len(id), 100)
	require.True(t, strings.HasSuffix(id, "-"+testLogID))
	require.Equal(t, id, MessageID(long, testLogID))
	require.NotEqual(t, id, MessageID(long+"x", testLogID))
	require.Less(t, len(MessageID(long, strings.Repeat("9", 200))), 100)
	// The longest production tenant name keeps the plain form.
	require.Equal(t, strings.Repeat("a", 32)+"-"+testLogID, MessageID(strings.Repeat("a", 32), testLogID))
}

func TestAnonymousID(t *testing.T) {
	a := AnonymousID(testKey, "acme", "user_name", "bob")
	require.Len(t, a, len("anon-")+32)
	require.Equal(t, a, AnonymousID(testKey, "acme", "user_name", "bob"))
	require.NotEqual(t, a, AnonymousID(testKey, "other", "user_name", "bob"))
	require.NotEqual(t, a, AnonymousID(testKey, "acme", "ip", "bob"))
	require.NotEqual(t, a, AnonymousID([]byte("another key"), "acme", "user_name", "bob"))
	// The separators keep field boundaries: no ambiguity by concatenation.
	require.NotEqual(t, AnonymousID(testKey, "a", "b", "c"), AnonymousID(testKey, "a\x00b", "", "c"))
}

// TestSizeGuardMatchesAnalyticsGo checks that Map's limit is analytics-go's:
// a message Map accepts at exactly the limit is sent, one byte more is
// failed by analytics-go with ErrMessageTooBig.
func TestSizeGuardMatchesAnalyticsGo(t *testing.T) {
	l := decodeLog(t, map[string]any{"type": "s", "user_id": "u", "pad": ""})
	base, err := Map("acme", l, testKey, keepAll)
	require.NoError(t, err)
	pad := MaxMessageBytes - len(mustJSON(t, base))

	atLimit := decodeLog(t, map[string]any{"type": "s", "user_id": "u", "pad": strings.Repeat("p", pad)})
	tr, err := Map("acme", atLimit, testKey, PIIPolicy{})
	require.NoError(t, err)
	require.Len(t, mustJSON(t, tr), MaxMessageBytes)
	over := decodeLog(t, map[string]any{"type": "s", "user_id": "u", "pad": strings.Repeat("p", pad+1)})
	_, err = Map("acme", over, testKey, PIIPolicy{})
	var oe *OversizeError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, MaxMessageBytes+1, oe.Bytes)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	cb := &recordingCallback{}
	client, err := analytics.NewWithConfig("k", analytics.Config{
		Endpoint: srv.URL, Interval: 20 * time.Millisecond, BatchSize: 1, Callback: cb,
		Logger: clientLogger{log: discardLogger()},
	})
	require.NoError(t, err)
	tooBig := tr
	tooBig.Properties = analytics.Properties{}
	for k, v := range tr.Properties {
		tooBig.Properties[k] = v
	}
	tooBig.Properties["pad"] = strings.Repeat("p", pad+1)
	tooBig.MessageId = strings.Repeat("z", len(tr.MessageId)) // same size
	require.NoError(t, client.Enqueue(tr))
	require.NoError(t, client.Enqueue(tooBig))
	require.NoError(t, client.Close())
	cb.mu.Lock()
	defer cb.mu.Unlock()
	require.Equal(t, []string{tr.MessageId}, cb.ok)
	require.Len(t, cb.failed, 1)
	require.ErrorIs(t, cb.failed[tooBig.MessageId], analytics.ErrMessageTooBig)
}

type recordingCallback struct {
	mu     sync.Mutex
	ok     []string
	failed map[string]error
}

func (c *recordingCallback) Success(m analytics.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok = append(c.ok, messageIDOf(m))
}

func (c *recordingCallback) Failure(m analytics.Message, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = map[string]error{}
	}
	c.failed[messageIDOf(m)] = err
}

func FuzzMap(f *testing.F) {
	f.Add("acme", []byte(`{"log_id":"`+testLogID+`","date":"2025-01-02T03:04:05Z","type":"s","user_id":"u","ip":"1.2.3.4"}`))
	f.Add("acme", []byte(`{"log_id":"`+testLogID+`","date":"2025-01-02T03:04:05Z","type":"fu","user_id":"","user_name":"x@y.z","details":{"a":[1,2.5e3,null]}}`))
	f.Add("t", []byte(`{"log_id":"`+testLogID+`","date":"2025-01-02T03:04:05.999999999+02:00","type":"zz","ip":"::ffff:1.2.3.4","user_agent":7}`))
	f.Add("acme", []byte(`{"type":"s"}`))
	f.Add("", []byte(`[]`))
	f.Add("acme", []byte(`{"log_id":"`+testLogID+`","date":"2025-01-02T03:04:05Z","type":"s","details":"`+strings.Repeat("d", 33000)+`"}`))
	f.Add("acme", []byte(`{"log_id":"`+testLogID+`","date":"2025-01-02T03:04:05Z","type":"f","description":"bad login for a@b.cc from 10.0.0.1",`+
		`"location_info":{"city_name":"Berlin","latitude":52.5},"details":{"c@d.ee":["2001:db8::1","p@q.ra@b.cc"],"x-forwarded-for":"1.1.1.1, ::1"}}`))
	f.Add("acme", []byte(`{"log_id":"`+testLogID+`","date":"2025-01-02T03:04:05Z","type":"a@b.cc","user_name":{"n":"e@f.gg"},"ip":["1.2.3.4"]}`))
	date := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, tenant string, raw []byte) {
		l, err := auth0log.Decode(raw)
		if err != nil {
			// Exercise Map on raw bytes Decode would refuse, too.
			l = auth0log.Log{ID: testLogID, Date: date, Type: "s", Raw: raw}
		}
		for _, policy := range []PIIPolicy{{}, dropAll, keepAll} {
			tr, trimmed, err := newMapper(tenant, testKey, policy).mapLog(l)
			if err != nil {
				var ie *InvalidError
				var oe *OversizeError
				require.True(t, errors.As(err, &ie) || errors.As(err, &oe), "unexpected error type %T: %v", err, err)
				if oe != nil {
					require.Greater(t, oe.Bytes, MaxMessageBytes)
				}
				continue
			}
			require.NoError(t, tr.Validate())
			require.Equal(t, "track", tr.Type)
			require.NotEmpty(t, tr.Event)
			require.Less(t, len(tr.MessageId), 100)
			require.Equal(t, MessageID(tenant, l.ID), tr.MessageId)
			require.False(t, tr.Timestamp.IsZero())
			b, err := json.Marshal(tr)
			require.NoError(t, err)
			require.LessOrEqual(t, len(b), MaxMessageBytes)
			require.GreaterOrEqual(t, sizeBound(tr), len(b), "sizeBound bounds what json.Marshal writes")
			require.True(t, json.Valid(b))
			require.Equal(t, l.ID, tr.Properties["log_id"])
			if trimmed {
				require.NotContains(t, tr.Properties, "details")
				require.Equal(t, true, tr.Properties["details_trimmed"])
			}
			for _, k := range []string{"date"} {
				require.NotContains(t, tr.Properties, k)
			}
			again, _, err := newMapper(tenant, testKey, policy).mapLog(l)
			require.NoError(t, err)
			b2, err := json.Marshal(again)
			require.NoError(t, err)
			require.Equal(t, string(b), string(b2))

			if policy != keepAll {
				requireNoPIIInClear(t, tenant, raw, b)
			}
		}
	})
}

// requireNoPIIInClear checks that no e-mail or IP address of the input
// appears in the encoded message, and that no string of the message (but
// userId, which the policy keeps, and the configured tenant) holds anything
// that looks like one.
func requireNoPIIInClear(t *testing.T, tenant string, raw, msg []byte) {
	t.Helper()
	var in any
	if json.Unmarshal(raw, &in) != nil {
		return // Map refused it
	}
	var out map[string]any
	require.NoError(t, json.Unmarshal(msg, &out))
	delete(out, "userId")
	delete(out, "messageId") // tenant + log_id
	if props, ok := out["properties"].(map[string]any); ok {
		delete(props, "tenant")
	}
	var found []string
	jsonStrings(in, func(s string) {
		for _, m := range piiMatches(s) {
			if !strings.Contains(tenant, m) {
				found = append(found, m)
			}
		}
	})
	jsonStrings(out, func(s string) {
		require.Empty(t, piiMatches(s), "an address in clear in %q", s)
		for _, m := range found {
			require.NotContains(t, s, m)
		}
	})
}

// TestReasonKinds checks that dead-letter reasons start with the kinds the
// buffer counts them under.
func TestReasonKinds(t *testing.T) {
	require.True(t, strings.HasPrefix((&InvalidError{Reason: "x"}).Error(), buffer.ReasonInvalid+": "))
	require.True(t, strings.HasPrefix((&OversizeError{Bytes: 1, Limit: 2}).Error(), buffer.ReasonOversize+": "))
	require.True(t, strings.HasPrefix((&OversizeError{Bytes: 1, Limit: 2, DetailsDropped: true}).Error(), buffer.ReasonOversize+": "))
}
