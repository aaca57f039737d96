package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Report is what Verify found in one trail.
type Report struct {
	// Source names the trail: the file's path, or the Redis stream key.
	Source string
	// Entries counts the entries read (up to the break, if any).
	Entries int
	// FirstSeq and LastSeq are the seq of the first and last entry read.
	FirstSeq, LastSeq uint64
	// Genesis: the trail holds its chain's first entry (seq 1). When false
	// the head was trimmed (Redis retention, a rotated file) and the chain
	// starts after seq FirstSeq-1.
	Genesis bool
	// Broken is the first broken link; nil when the chain is intact.
	Broken *Break
}

// Break is the first broken link of a trail: the entry at Where, whose
// link to what came before it does not hold.
type Break struct {
	Where   string // "line 17" or "stream id 1767225600000-0"
	Seq     uint64 // the entry's seq, 0 when it has none
	Problem string
}

// OK reports whether the chain is intact.
func (r Report) OK() bool { return r.Broken == nil }

func (r Report) String() string {
	if r.Broken != nil {
		seq := ""
		if r.Broken.Seq > 0 {
			seq = fmt.Sprintf(" (seq %d)", r.Broken.Seq)
		}
		return fmt.Sprintf("%s: BROKEN at %s%s: %s", r.Source, r.Broken.Where, seq, r.Broken.Problem)
	}
	if r.Entries == 0 {
		return r.Source + ": ok: no entries"
	}
	start := "from the chain's first entry"
	if !r.Genesis {
		start = fmt.Sprintf("the head before seq %d was trimmed", r.FirstSeq)
	}
	return fmt.Sprintf("%s: ok: %d entries, seq %d to %d (%s)", r.Source, r.Entries, r.FirstSeq, r.LastSeq, start)
}

// chainHead is what the chain needs of an entry.
type chainHead struct {
	Seq  uint64  `json:"seq"`
	Prev *string `json:"prev"`
}

// checker walks a chain entry by entry.
type checker struct {
	rep   *Report
	last  link
	where string // the previous entry's place
}

// add checks the next entry; false once the chain is broken.
func (c *checker) add(where string, line []byte) bool {
	var h chainHead
	if err := json.Unmarshal(line, &h); err != nil || h.Seq == 0 || h.Prev == nil {
		c.rep.Broken = &Break{Where: where, Problem: "not an audit entry (edited, or not written by authpipe)"}
		return false
	}
	prev := *h.Prev
	if c.rep.Entries == 0 {
		c.rep.FirstSeq, c.rep.Genesis = h.Seq, h.Seq == 1
		if (h.Seq == 1) != (prev == "") {
			c.rep.Broken = &Break{Where: where, Seq: h.Seq, Problem: "the chain's first entry is inconsistent: seq 1 must have an empty prev, any later one a hash"}
			return false
		}
	} else {
		var problem string
		switch {
		case h.Seq <= c.last.seq:
			problem = fmt.Sprintf("seq goes back from %d (%s) to %d: entries were reordered or copied, or a new chain was started here", c.last.seq, c.where, h.Seq)
		case h.Seq > c.last.seq+1:
			missing := h.Seq - c.last.seq - 1
			problem = fmt.Sprintf("%d entr%s missing before it (seq %d", missing, plural(missing, "y", "ies"), c.last.seq+1)
			if missing > 1 {
				problem += fmt.Sprintf(" to %d", h.Seq-1)
			}
			problem += fmt.Sprintf("), after %s: deleted", c.where)
		case prev != c.last.hash:
			problem = fmt.Sprintf("its prev does not match the hash of the entry before it (%s, seq %d): that entry was edited (or this entry's prev was)", c.where, c.last.seq)
		}
		if problem != "" {
			c.rep.Broken = &Break{Where: where, Seq: h.Seq, Problem: problem}
			return false
		}
	}
	c.rep.Entries++
	c.rep.LastSeq = h.Seq
	c.last, c.where = link{h.Seq, Hash(line)}, where
	return true
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// VerifyLines checks the chain of a JSON-lines trail (an audit log file).
// Its head may be trimmed (a rotated file starts in the middle of the
// chain); from there on every entry must link to the one before it. The
// error is for reading only; a broken chain is in the Report.
func VerifyLines(r io.Reader, source string) (Report, error) {
	rep := Report{Source: source}
	c := &checker{rep: &rep}
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				rep.Broken = &Break{Where: fmt.Sprintf("line %d", n), Problem: "the file ends in part of a line (a crash while writing, or an edit)"}
				return rep, nil
			}
			if !c.add(fmt.Sprintf("line %d", n), line[:len(line)-1]) {
				return rep, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return rep, nil
		}
		if err != nil {
			return rep, fmt.Errorf("read %s: %w", source, err)
		}
	}
}

// VerifyFile is VerifyLines of a file.
func VerifyFile(path string) (Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return Report{Source: path}, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	return VerifyLines(f, path)
}

// chainState is the chain record's content.
type chainState struct {
	startID, startPrev, lastID, lastHash string
	startSeq, lastSeq                    uint64
	known                                bool
}

func readChain(ctx context.Context, client redis.UniversalClient, keys Keys) (chainState, error) {
	m, err := client.HGetAll(ctx, keys.Chain).Result()
	if err != nil {
		return chainState{}, fmt.Errorf("read %s: %w", keys.Chain, err)
	}
	if len(m) == 0 {
		return chainState{}, nil
	}
	s := chainState{known: true, startID: m["start_id"], startPrev: m["start_prev"], lastID: m["last_id"], lastHash: m["last_hash"]}
	s.startSeq, _ = strconv.ParseUint(m["start_seq"], 10, 64)
	s.lastSeq, _ = strconv.ParseUint(m["last_seq"], 10, 64)
	return s, nil
}

// VerifyRedis checks the Redis audit stream: from the chain start recorded
// by the last trim (entries before it were trimmed by retention; an entry
// missing after it was deleted) to the chain's last entry, every entry
// must link to the one before it.
func VerifyRedis(ctx context.Context, client redis.UniversalClient, keys Keys) (Report, error) {
	rep := Report{Source: keys.Stream}
	chain, err := readChain(ctx, client, keys)
	if err != nil {
		return rep, err
	}
	c := &checker{rep: &rep}
	start, lastID := "-", ""
	for {
		msgs, err := client.XRangeN(ctx, keys.Stream, start, "+", 1000).Result()
		if err != nil {
			return rep, fmt.Errorf("read %s: %w", keys.Stream, err)
		}
		for _, m := range msgs {
			where := "stream id " + m.ID
			line, _ := m.Values["entry"].(string)
			if rep.Entries == 0 && c.where == "" {
				if b := checkStart(chain, m.ID, line); b != nil {
					b.Where = where
					rep.Broken = b
					return rep, nil
				}
			}
			if !c.add(where, []byte(line)) {
				return rep, nil
			}
			lastID = m.ID
		}
		if len(msgs) < 1000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	switch {
	case !chain.known && rep.Entries > 0:
		rep.Broken = &Break{Where: c.where, Seq: rep.LastSeq, Problem: "the chain record " + keys.Chain + " is missing (deleted?): the chain's ends cannot be checked"}
	case chain.known && rep.Entries == 0:
		rep.Broken = &Break{Where: "stream " + keys.Stream, Problem: fmt.Sprintf("the stream is empty but the chain recorded entries up to seq %d (id %s): deleted", chain.lastSeq, chain.lastID)}
	case chain.known && lastID != chain.lastID:
		rep.Broken = &Break{Where: c.where, Seq: rep.LastSeq, Problem: fmt.Sprintf("the chain's last entry is seq %d (id %s), but the stream ends here: the entries after it were deleted", chain.lastSeq, chain.lastID)}
	case chain.known && (rep.LastSeq != chain.lastSeq || c.last.hash != chain.lastHash):
		rep.Broken = &Break{Where: c.where, Seq: rep.LastSeq, Problem: "the last entry does not match the chain record " + keys.Chain + ": it was edited"}
	}
	return rep, nil
}

// checkStart checks the stream's first entry against the recorded chain
// start.
func checkStart(chain chainState, id, line string) *Break {
	if !chain.known {
		return nil // reported after the walk
	}
	var h chainHead
	_ = json.Unmarshal([]byte(line), &h)
	switch {
	case id != chain.startID:
		return &Break{Seq: h.Seq, Problem: fmt.Sprintf("the chain starts at id %s (seq %d, recorded by the last trim) but the stream's first entry is this one: the entries before it were deleted", chain.startID, chain.startSeq)}
	case h.Seq != chain.startSeq || h.Prev == nil || *h.Prev != chain.startPrev:
		return &Break{Seq: h.Seq, Problem: "the first entry does not match the chain start recorded by the last trim: it was edited"}
	}
	return nil
}

// Tail calls fn with the last n entries of a JSON-lines file, oldest
// first; with follow, then with every entry appended until ctx ends.
func Tail(ctx context.Context, path string, n int, follow bool, fn func(line []byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var ring [][]byte
	var partial []byte
	readAll := func(emit bool) error {
		for {
			line, err := br.ReadBytes('\n')
			partial = append(partial, line...)
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return fmt.Errorf("read audit log: %w", err)
			}
			l := strings.TrimSuffix(string(partial), "\n")
			partial = nil
			if emit {
				fn([]byte(l))
				continue
			}
			ring = append(ring, []byte(l))
			if len(ring) > n {
				ring = ring[1:]
			}
		}
	}
	if err := readAll(false); err != nil {
		return err
	}
	for _, l := range ring {
		fn(l)
	}
	for follow {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
		if err := readAll(true); err != nil {
			return err
		}
	}
	return nil
}

// TailRedis calls fn with the last n entries of the Redis audit stream,
// oldest first; with follow, then with every entry appended until ctx
// ends.
func TailRedis(ctx context.Context, client redis.UniversalClient, keys Keys, n int, follow bool, fn func(line []byte)) error {
	msgs, err := client.XRevRangeN(ctx, keys.Stream, "+", "-", int64(n)).Result()
	if err != nil {
		return fmt.Errorf("read %s: %w", keys.Stream, err)
	}
	last := "0-0"
	for i := len(msgs) - 1; i >= 0; i-- {
		s, _ := msgs[i].Values["entry"].(string)
		fn([]byte(s))
	}
	if len(msgs) > 0 {
		last = msgs[0].ID
	}
	for follow && ctx.Err() == nil {
		streams, err := client.XRead(ctx, &redis.XReadArgs{Streams: []string{keys.Stream, last}, Block: time.Second, Count: 100}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s: %w", keys.Stream, err)
		}
		for _, st := range streams {
			for _, m := range st.Messages {
				s, _ := m.Values["entry"].(string)
				fn([]byte(s))
				last = m.ID
			}
		}
	}
	return nil
}
