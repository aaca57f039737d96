package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDocumentation keeps CONFIGURATION.md in step with the settings table:
// one row per setting with its YAML key and its real default, no row for a
// setting that does not exist, and the _FILE variant of every secret.
func TestDocumentation(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "CONFIGURATION.md"))
	require.NoError(t, err)
	doc := string(data)

	rows := map[string][]string{} // env name → cells of its table row
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		env := strings.Trim(cells[0], "`")
		_, dup := rows[env]
		require.False(t, dup, "%s has two rows", env)
		rows[env] = cells
	}

	known := map[string]bool{EnvConfig: true}
	for _, s := range settings() {
		known[s.env] = true
		t.Run(s.env, func(t *testing.T) {
			cells, ok := rows[s.env]
			require.True(t, ok, "CONFIGURATION.md has no row for %s", s.env)
			require.Len(t, cells, 5, "columns: Environment | YAML key | Default | Meaning | Example")
			require.Equal(t, "`"+s.key+"`", cells[1])

			def := Default()
			switch dflt := cells[2]; {
			case dflt == "**required**":
				require.True(t, s.required && s.empty(&def), "documented as required")
			case strings.HasPrefix(dflt, "—"):
				require.True(t, !s.required && s.empty(&def), "documented as unset by default")
			case dflt == "host name":
				require.Equal(t, "AUTHPIPE_CONSUMER", s.env)
			default:
				// Setting the documented default must change nothing.
				c := Default()
				require.Empty(t, s.set(&c, strings.Trim(dflt, "`")), "documented default %s does not parse", dflt)
				require.Equal(t, def, c, "documented default %s is not the default", dflt)
			}
			require.NotEmpty(t, cells[3], "meaning")
			require.NotEmpty(t, cells[4], "example")
			if s.secret {
				require.Contains(t, doc, "`"+s.env+"_FILE`")
			}
		})
	}
	for env := range rows {
		require.True(t, known[env], "CONFIGURATION.md documents %s, which is not a setting", env)
	}
}

// TestDocumentationOrder: errors follow the settings table, and the
// documentation promises the order of its tables.
func TestDocumentationOrder(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "CONFIGURATION.md"))
	require.NoError(t, err)
	var documented []string
	for _, line := range strings.Split(string(data), "\n") {
		if env, ok := strings.CutPrefix(line, "| `"); ok {
			env, _, _ = strings.Cut(env, "`")
			if env != EnvConfig {
				documented = append(documented, env)
			}
		}
	}
	var table []string
	for _, s := range settings() {
		table = append(table, s.env)
	}
	require.Equal(t, table, documented)
}
