package stream

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
)

// TestE2EDemoRunsWithTheStream: `authpipe demo` pushes every log through
// a simulated Log Stream (10 % of its deliveries dropped here) beside the
// poller, and its summary says what each source delivered first and that
// the stream's misses are exactly what it dropped.
func TestE2EDemoRunsWithTheStream(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(authpipeBin, "demo", "--data-dir", filepath.Join(t.TempDir(), "demo"),
		"--listen", e2etest.FreeAddr(t), "--duration", "8s", "--stream-drop", "0.1")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Run(), "demo output:\n%s", out.String())
	s := out.String()
	require.Contains(t, s, "nothing lost: every generated event reached Segment")
	require.Contains(t, s, "a Log Stream pushes every log to http://127.0.0.1:")
	require.Regexp(t, `delivered first +by the Log Stream \d+ \(\d+\.\d%\), by the poller \d+ \(\d+\.\d%\)`, s)
	m := regexp.MustCompile(`stream missed +(\d+) \(the simulated stream dropped (\d+);`).FindStringSubmatch(s)
	require.NotNil(t, m, s)
	require.Equal(t, m[2], m[1], "missed = dropped:\n%s", s)
	require.NotEqual(t, "0", m[2], "the stream dropped some deliveries")
}
