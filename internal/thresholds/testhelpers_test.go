package thresholds

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
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
