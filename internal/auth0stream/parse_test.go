package auth0stream_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0stream"
)

const (
	id1 = "90020250310115902000000000000000000000000000000000000001"
	id2 = "90020250310115902000000000000000000000000000000000000002"
)

func event(id string) string {
	return fmt.Sprintf(`{"log_id":%q,"date":"2025-03-10T11:59:00.000Z","type":"fp","user_name":"a@example.com","details":{"n":"é\n"}}`, id)
}

func record(id string) string { return fmt.Sprintf(`{"log_id":%q,"data":%s}`, id, event(id)) }

// TestParseBodyFormats: each format, as Auth0 might lay it out, yields the
// records' events verbatim, in order.
func TestParseBodyFormats(t *testing.T) {
	r1, r2 := record(id1), record(id2)
	cases := []struct {
		name   string
		body   string
		format auth0stream.Format
		n      int
	}{
		{"lines", r1 + "\n" + r2 + "\n", auth0stream.JSONLines, 2},
		{"lines CRLF, blank lines, no final newline", "\r\n" + r1 + "\r\n\r\n  " + r2, auth0stream.JSONLines, 2},
		{"one line", r1 + "\n", auth0stream.JSONLines, 1},
		{"array", "[" + r1 + "," + r2 + "]", auth0stream.JSONArray, 2},
		{"array with white space", " [\n " + r1 + " ,\n\t" + r2 + "\n]\n", auth0stream.JSONArray, 2},
		{"empty array", "[]", auth0stream.JSONArray, 0},
		{"object", `{"logs":[` + r1 + "," + r2 + "]}", auth0stream.JSONObject, 2},
		{"object, pretty and with other members", "{\n  \"logs\": [\n" + r1 + ",\n" + r2 + "\n  ],\n  \"count\": 2\n}", auth0stream.JSONObject, 2},
		{"object, no logs", `{"logs":[]}`, auth0stream.JSONObject, 0},
		{"record with other members", `{"tenant":"x","log_id":"` + id1 + `","data":` + event(id1) + `,"more":[1]}`, auth0stream.JSONLines, 1},
		{"escaped log_id", `{"log_id":"\u0039` + id1[1:] + `","data":` + event(id1) + `}`, auth0stream.JSONLines, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			format, logs, err := auth0stream.ParseBody([]byte(tc.body))
			require.NoError(t, err)
			require.Equal(t, tc.format, format)
			require.Len(t, logs, tc.n)
			for i, l := range logs {
				want := []string{id1, id2}[i]
				require.Equal(t, want, l.ID)
				require.Equal(t, event(want), string(l.Raw))
				require.Equal(t, "fp", l.Type)
			}
		})
	}
}

// TestParseBodyNamesTheFirstBadRecord: the error names the first bad
// record, counted from 0, also when later ones are bad too.
func TestParseBodyNamesTheFirstBadRecord(t *testing.T) {
	body := "[" + record(id1) + `,{"data":` + event(id2) + `},{"log_id":"x"}]`
	_, _, err := auth0stream.ParseBody([]byte(body))
	var bad *auth0stream.BadRequestError
	require.ErrorAs(t, err, &bad)
	require.Equal(t, 1, bad.Record)
	require.Equal(t, "record 1: missing log_id", err.Error())

	_, _, err = auth0stream.ParseBody([]byte("nope"))
	require.ErrorAs(t, err, &bad)
	require.Equal(t, -1, bad.Record)
}

// FuzzParseBody: any body either parses into valid events whose log_ids
// are the records' and whose raw JSON decodes to the same log, or is a
// *BadRequestError; a parsed body re-encoded in every format parses to the
// same events.
func FuzzParseBody(f *testing.F) {
	r1, r2 := record(id1), record(id2)
	for _, seed := range []string{
		r1 + "\n" + r2, "[" + r1 + "," + r2 + "]", `{"logs":[` + r1 + "]}", r1, "[]", `{"logs":[]}`, "",
		`{"log_id":"` + id1 + `","data":` + event(id2) + `}`, `{"logs":{}}`, "[1,2", "{\n}\n{", `{"data":null}`,
		`{"log_id":"` + id1 + `","log_id":"` + id1 + `","data":` + event(id1) + `}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := string(body)
		_, logs, err := auth0stream.ParseBody(body)
		require.Equal(t, orig, string(body), "ParseBody changed its input")
		if err != nil {
			var bad *auth0stream.BadRequestError
			require.True(t, errors.As(err, &bad), "%T %v", err, err)
			require.NotEmpty(t, bad.Reason)
			return
		}
		var records []string
		for _, l := range logs {
			require.NoError(t, auth0log.ValidateID(l.ID))
			again, err := auth0log.Decode(l.Raw)
			require.NoError(t, err)
			require.Equal(t, l.ID, again.ID)
			require.True(t, json.Valid(l.Raw))
			records = append(records, fmt.Sprintf(`{"log_id":%q,"data":%s}`, l.ID, l.Raw))
		}
		for _, again := range []string{
			strings.Join(records, "\n"),
			"[" + strings.Join(records, ",") + "]",
			`{"logs":[` + strings.Join(records, ",") + "]}",
		} {
			if len(records) == 0 && !strings.HasPrefix(again, "[") && !strings.HasPrefix(again, "{") {
				continue // no lines at all is an empty body
			}
			_, logs2, err := auth0stream.ParseBody([]byte(again))
			require.NoError(t, err, again)
			require.Len(t, logs2, len(logs))
			for i := range logs {
				require.Equal(t, logs[i].ID, logs2[i].ID)
				require.Equal(t, string(logs[i].Raw), string(logs2[i].Raw))
			}
		}
	})
}
