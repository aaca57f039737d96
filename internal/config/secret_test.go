package config

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

const secretValue = "S3cr3t-value-42"

// Secret redacts itself through every interface that prints or encodes.
var (
	_ fmt.Stringer           = Secret("")
	_ fmt.GoStringer         = Secret("")
	_ fmt.Formatter          = Secret("")
	_ json.Marshaler         = Secret("")
	_ encoding.TextMarshaler = Secret("")
	_ slog.LogValuer         = Secret("")
	_ yaml.Unmarshaler       = (*Secret)(nil)
)

func TestSecretNeverPrints(t *testing.T) {
	type holder struct {
		Name  string
		Token Secret
	}
	s := Secret(secretValue)
	h := holder{Name: "x", Token: s}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-10v", "%T"} {
		t.Run(verb, func(t *testing.T) {
			for _, out := range []string{
				fmt.Sprintf(verb, s),
				fmt.Sprintf(verb, &s),
				fmt.Sprintf(verb, h),
				fmt.Sprintf(verb, &h),
				fmt.Sprintf(verb, []Secret{s}),
				fmt.Sprintf(verb, map[string]Secret{"k": s}),
				fmt.Sprintf(verb, any(s)),
			} {
				require.NotContains(t, out, secretValue)
			}
		})
	}
	require.Equal(t, "<secret>", fmt.Sprintf("%v", s))
	require.Equal(t, "<secret>", fmt.Sprintf("%#v", s))
	require.Equal(t, "<secret>", fmt.Sprint(s))
	require.Equal(t, "<secret>", s.String())
	require.Equal(t, "<secret>", s.GoString())
	require.Equal(t, "{Name:x Token:<secret>}", fmt.Sprintf("%+v", h))
	require.Equal(t, "token <secret>", fmt.Errorf("token %v", s).Error())
	require.Equal(t, secretValue, s.Reveal())
}

func TestSecretEmptyPrintsEmpty(t *testing.T) {
	var s Secret
	require.Equal(t, "|||", fmt.Sprintf("%v|%s|%q|%#v", s, s, s, s))
	require.Equal(t, "", s.String())
	j, err := json.Marshal(s)
	require.NoError(t, err)
	require.JSONEq(t, `""`, string(j))
	txt, err := s.MarshalText()
	require.NoError(t, err)
	require.Empty(t, txt)
	require.Equal(t, "", s.LogValue().String())
}

func TestSecretJSON(t *testing.T) {
	type payload struct {
		Key    Secret            `json:"key"`
		Ptr    *Secret           `json:"ptr"`
		Map    map[string]Secret `json:"map"`
		Empty  Secret            `json:"empty"`
		Nested Config            `json:"nested"`
	}
	s := Secret(secretValue)
	cfg := Default()
	cfg.Auth0.ClientSecret = s
	cfg.Segment.WriteKey = s
	cfg.Redis.URL = "redis://:" + s + "@redis:6379/0"
	cfg.HashKey = s
	out, err := json.Marshal(payload{Key: s, Ptr: &s, Map: map[string]Secret{"k": s}, Nested: cfg})
	require.NoError(t, err)
	require.NotContains(t, string(out), "S3cr3t")

	var back struct {
		Key    string            `json:"key"`
		Ptr    string            `json:"ptr"`
		Map    map[string]string `json:"map"`
		Empty  string            `json:"empty"`
		Nested struct {
			Auth0 struct{ ClientSecret string }
			Redis struct{ URL string }
		} `json:"nested"`
	}
	require.NoError(t, json.Unmarshal(out, &back))
	require.Equal(t, "<secret>", back.Key)
	require.Equal(t, "<secret>", back.Ptr)
	require.Equal(t, map[string]string{"k": "<secret>"}, back.Map)
	require.Equal(t, "", back.Empty)
	require.Equal(t, "<secret>", back.Nested.Auth0.ClientSecret)
	require.Equal(t, "<secret>", back.Nested.Redis.URL)
}

func TestSecretSlog(t *testing.T) {
	s := Secret(secretValue)
	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(newHandler(&buf))
			cfg := Default()
			cfg.Segment.WriteKey = s
			log.Info("loaded", "secret", s, "ptr", &s, "any", any(s), slog.Any("cfg", cfg), slog.Group("g", "k", s))
			log.With("with", s).Info("again")
			require.NotContains(t, buf.String(), "S3cr3t")
			require.Contains(t, buf.String(), "<secret>")
			if name == "json" {
				var rec map[string]any
				line, _, _ := bytes.Cut(buf.Bytes(), []byte("\n"))
				require.NoError(t, json.Unmarshal(line, &rec))
				require.Equal(t, "<secret>", rec["secret"])
				require.Equal(t, "<secret>", rec["any"])
			}
		})
	}
}

func TestSecretYAML(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    Secret
		wantErr string
	}{
		{name: "string", doc: "key: " + secretValue, want: secretValue},
		{name: "quoted", doc: `key: " spaced "`, want: " spaced "},
		{name: "number", doc: "key: 12345", want: "12345"},
		{name: "null", doc: "key: ~", want: ""},
		{name: "alias", doc: "a: &x abc\nkey: *x", want: "abc"},
		{name: "list", doc: "key: [" + secretValue + "]", wantErr: "a secret must be a single string value, found a list"},
		{name: "mapping", doc: "key: {v: " + secretValue + "}", wantErr: "a secret must be a single string value, found a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v struct {
				A   string `yaml:"a"`
				Key Secret `yaml:"key"`
			}
			err := yaml.Unmarshal([]byte(tt.doc), &v)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), "S3cr3t")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, v.Key)
		})
	}

	out, err := yaml.Marshal(struct{ Key Secret }{Secret(secretValue)})
	require.NoError(t, err)
	require.Equal(t, "key: <secret>\n", string(out))
}

func TestSecretInWrappedError(t *testing.T) {
	err := fmt.Errorf("connect: %w", errors.New(fmt.Sprint("password ", Secret(secretValue))))
	require.NotContains(t, err.Error(), secretValue)
}
