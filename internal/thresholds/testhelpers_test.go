package thresholds

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/thresholds/store"
)

func readTestFile(t *testing.T, path string) testFile {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var tf testFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&tf))
	return tf
}

// writeRules writes a rule file and returns its path.
func writeRules(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := dir + "/" + name
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// countEvents is countBatch with the evaluator's own real-time setting.
func (ev *evaluator) countEvents(ctx context.Context, events []store.Event, invalid []string) error {
	return ev.countBatch(ctx, events, invalid, ev.realtime)
}
