package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// marker is part of every secret in the seeds. It must never show up in an
// error unless a non-secret input carries it too (non-secret values are
// quoted in errors on purpose).
const marker = "S3cr3t"

// FuzzLoad feeds arbitrary YAML and environment values to the loader. It
// must never panic; an error must be one line starting "config: " and must
// not leak a secret; a success must pass Validate.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(""), "acme.eu.auth0.com", "10s", "100", "S3cr3t-client", "S3cr3t-write", "", "")
	f.Add([]byte(fullYAML), "", "", "", "", "", "", "")
	f.Add([]byte(tenantsYAML), "", "", "", "", "S3cr3t-w", "redis-cluster://:S3cr3t@a:1,b:2", "")
	f.Add([]byte("tenants:\n  - {name: a, auth0: {client_secret: [S3cr3t]}, segment: {write_key: S3cr3t}}\n"), "", "", "", "", "", "redis-sentinel://:S3cr3t@s:1,s:2/x?master=m", "")
	f.Add([]byte(fullYAML), "http://127.0.0.1:8080", "5x", "0", "S3cr3t-c", "S3cr3t-w", "redis://:S3cr3t@r:6379/0", "S3cr3t-hash-key-0123456789")
	f.Add([]byte("redis:\n  url: 'redis://u:12/S3cr3t@h:6379'\nhash_key: S3cr3t\n"), "a.auth0.com", "", "", "S3cr3t-1", "S3cr3t-2", "", "")
	f.Add([]byte("auth0: {client_secret: [S3cr3t]}\nsegment: {write_key: {a: S3cr3t}}\n"), "", "", "", "", "", "redis://:S3cr3t#x@h", "")
	f.Add([]byte("a: &x S3cr3t\nauth0:\n  client_secret: *x\n"), "", "", "", "", "", "redis://h/0?S3cr3t=1", "S3cr3t")
	f.Add([]byte("auth0:\n  domain: x\n   bad: [\n"), "", "", "", "", "", "redis://default:S3cr3t@h:6379/S3cr3t", "")
	f.Add([]byte("tenant: x\n---\ntenant: y\n"), "", "", "", "", "", "rediss://:S3cr3t@h:6380/0?dial_timeout=S3cr3t", "")
	f.Add([]byte("<<: *nope\n"), "ftp://u:S3cr3t@h", "", "", "", "", "", "")
	f.Add([]byte("- a\n"), "", "", "", "S3cr3t\r\n", "\n", "redis:S3cr3t", "")
	f.Add([]byte("auth0:\n  domain: a\n  domain: b\nlog: {level: LOUD, format: xml}\n"), "", "1h1s", "101", "", "", "", "")

	f.Fuzz(func(t *testing.T, data []byte, domain, poll, pageSize, clientSecret, writeKey, redisURL, hashKey string) {
		env := map[string]string{
			"AUTH0_DOMAIN":        domain,
			"AUTH0_CLIENT_ID":     "client-id",
			"AUTH0_POLL_INTERVAL": poll,
			"AUTH0_PAGE_SIZE":     pageSize,
			"AUTH0_CLIENT_SECRET": clientSecret,
			"SEGMENT_WRITE_KEY":   writeKey,
			"REDIS_URL":           redisURL,
			"AUTHPIPE_HASH_KEY":   hashKey,
		}
		if len(data) > 0 {
			env[EnvConfig] = "fuzz.yml"
		}
		readFile := func(path string) ([]byte, error) {
			if path == "fuzz.yml" {
				return data, nil
			}
			return nil, errors.New("no such file")
		}

		cfg, err := load(envFrom(env), readFile)
		cfg2, err2 := load(envFrom(env), readFile)
		require.Equal(t, err, err2, "deterministic")
		require.Equal(t, cfg, cfg2, "deterministic")
		if err == nil {
			require.NoError(t, cfg.Validate())
			return
		}
		require.Nil(t, cfg)
		msg := err.Error()
		require.True(t, strings.HasPrefix(msg, "config: "), msg)
		require.NotContains(t, msg, "\n")
		var cerr *Error
		require.ErrorAs(t, err, &cerr)

		public := []string{domain, poll, pageSize}
		public = append(public, publicYAML(data)...)
		// Only values carrying the marker are checked: a short fuzzed secret
		// like "config" appears in every message without leaking anything.
		for _, s := range []string{clientSecret, writeKey, redisURL, hashKey, marker} {
			if !strings.Contains(s, marker) || !strings.Contains(msg, s) {
				continue
			}
			explained := false
			for _, p := range public {
				explained = explained || strings.Contains(p, s)
			}
			if !explained {
				t.Fatalf("error leaks secret %q: %s", s, msg)
			}
		}
	})
}

// publicYAML returns the text of a YAML file that an error may quote: every
// key, anchor and value except what sits under a secret setting's key. A
// file that does not parse is public as a whole.
func publicYAML(data []byte) []string {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []string{string(data)}
	}
	secretKeys := map[string]bool{}
	for _, s := range settings() {
		if s.secret {
			secretKeys[s.key] = true
		}
	}
	isSecret := func(path string) bool {
		for p := strings.TrimPrefix(path, "tenants."); p != ""; {
			if secretKeys[p] {
				return true
			}
			i := strings.LastIndex(p, ".")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		return false
	}
	var out []string
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if n == nil || depth > 100 {
			return
		}
		out = append(out, n.Anchor)
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path, depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				walk(k, path, depth+1) // keys are quoted in "not found" errors
				child := k.Value
				if path != "" {
					child = path + "." + k.Value
				}
				walk(v, child, depth+1)
			}
		case yaml.ScalarNode:
			if !isSecret(path) {
				out = append(out, n.Value)
			}
		case yaml.AliasNode:
			out = append(out, n.Value)
		}
	}
	walk(&doc, "", 0)
	return out
}
