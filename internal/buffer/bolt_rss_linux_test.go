package buffer

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// rssFile returns this process's file-backed resident memory (RssFile).
func rssFile(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestBoltReadKeepsFileMostlyUnmapped: draining 64 MB of backlog leaves
// less than 40 MB of the file resident in the process (about two
// releaseEvery), not the whole file.
func TestBoltReadKeepsFileMostlyUnmapped(t *testing.T) {
	b, err := OpenBolt(t.TempDir(), Config{Tenant: "rss"}, Deps{})
	require.NoError(t, err)
	defer b.Close()
	ctx := t.Context()
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))

	const pages, perPage, size = 160, 100, 4000 // 64 MB of entries
	pad := strings.Repeat("x", size)
	at := time.Now().UTC().Truncate(time.Second)
	for p := range pages {
		logs := make([]auth0log.Log, perPage)
		for i := range logs {
			l := logAt(at, p*perPage+i)
			l.Raw = []byte(`{"log_id":"` + l.ID + `","pad":"` + pad + `"}`)
			logs[i] = l
		}
		_, err := b.Append(ctx, logs, logs[perPage-1].ID)
		require.NoError(t, err)
	}

	before := rssFile(t)
	got := 0
	for got < pages*perPage {
		es, err := b.Read(ctx, "fwd", "c", 500, -1)
		require.NoError(t, err)
		require.NotEmpty(t, es)
		got += len(es)
	}
	grown := rssFile(t) - before
	require.Less(t, grown, int64(40<<20), "file-backed RSS grew by %d MB reading 64 MB", grown>>20)
}
