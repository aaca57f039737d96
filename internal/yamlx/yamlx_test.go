package yamlx

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestSyntaxError(t *testing.T) {
	var n yaml.Node
	err := yaml.Unmarshal([]byte("rules:\n  - name: X\n    types: [fp\n    window: 5m\n"), &n)
	require.Error(t, err)
	line, msg := SyntaxError(err)
	require.Equal(t, 2, line)
	require.Equal(t, "did not find expected ',' or ']'", msg)

	line, msg = SyntaxError(errors.New("yaml: control characters are not allowed"))
	require.Zero(t, line)
	require.Equal(t, "control characters are not allowed", msg)
}

// Pairs resolves aliases (keys too) and gives each repeated key the line
// where it was first set.
func TestPairs(t *testing.T) {
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("x: &v 1\ny: *v\nx: 2\n? [a]\n: 3\nk: &k name\n*k : 4\n"), &doc))
	var got []string
	Pairs(DocumentRoot(&doc), func(k, v *yaml.Node, first int) {
		got = append(got, fmt.Sprintf("%s %s=%s first %d", KindName(k), k.Value, v.Value, first))
	})
	require.Equal(t, []string{
		"a single value x=1 first 0",
		"a single value y=1 first 0",
		"a single value x=2 first 1",
		"a list =3 first 0",
		"a single value k=name first 0",
		"a single value name=4 first 0",
	}, got)
	require.Nil(t, DocumentRoot(&yaml.Node{Kind: yaml.DocumentNode}))
}

func TestClosest(t *testing.T) {
	candidates := []string{"domain", "client_id", "retention"}
	require.Equal(t, "domain", Closest("domian", candidates))
	require.Equal(t, "client_id", Closest("clientid", candidates))
	require.Empty(t, Closest("segment", candidates), "nothing near")
	require.Empty(t, Closest("ab", []string{"xy"}), "as many edits as the key is long")
	require.Equal(t, "ab", Closest("aa", []string{"ba", "ab"}), "the first in lexical order among equals")
}
