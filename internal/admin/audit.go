package admin

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/buffer"
)

// ReasonAuditUnavailable is the code of the 503 answered when no audit
// sink takes a request's entry.
const ReasonAuditUnavailable = audit.ReasonUnavailable

// unavailableBody is the answer of a request refused for want of an audit
// sink.
var unavailableBody = errorBody{
	"the audit trail cannot be written, so nothing was done or shown; try again later",
	ReasonAuditUnavailable,
}

// answerUnavailable writes the 503 of a request refused for want of an
// audit sink.
func answerUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "30")
	writeJSON(w, http.StatusServiceUnavailable, unavailableBody)
}

// refusal is e as recorded when no sink took it: nothing was done or
// shown, so it names no records.
func refusal(e audit.Entry) audit.Entry {
	e.Kind, e.Part, e.Parts = audit.KindRequest, 1, 1
	e.Outcome, e.Reason, e.Status = audit.OutcomeRefused, audit.ReasonUnavailable, audit.IntPtr(http.StatusServiceUnavailable)
	e.Records, e.Missing, e.Affected = nil, nil, nil
	return e
}

// result is the entry that follows the request entry of a change: its
// status and what changed, without the request's lists.
func result(e audit.Entry) audit.Entry {
	e.Kind, e.Part, e.Parts = audit.KindResult, 1, 1
	e.Records, e.Missing = nil, nil
	return e
}

// Records are the audit records of dead letters.
func Records(dls []buffer.DeadLetter) []audit.Record {
	out := make([]audit.Record, len(dls))
	for i, d := range dls {
		out[i] = audit.Record{ID: d.ID, LogID: d.LogID}
	}
	return out
}

// DeadLetterLister lists dead letters (both buffers are one).
type DeadLetterLister interface {
	DeadLettersAfter(ctx context.Context, after string, count int) ([]buffer.DeadLetter, error)
}

// resolvePage is the page size of ResolveDeadLetters.
const resolvePage = 1000

// ResolveDeadLetters returns the dead letters a replay or drop is about to
// change, so that its audit entry can name them (id and log_id) before it
// acts, and the change can then be made on exactly those ids: with all,
// every dead letter there is now; else those of ids that exist (sorted,
// once each), and the ids that are not dead letters.
func ResolveDeadLetters(ctx context.Context, b DeadLetterLister, ids []string, all bool) (found []buffer.DeadLetter, missing []string, err error) {
	after, last := "", ""
	want := map[string]bool{}
	if !all {
		sorted := slices.Clone(ids)
		slices.SortFunc(sorted, compareIDs)
		sorted = slices.Compact(sorted)
		if len(sorted) == 0 {
			return nil, nil, nil
		}
		for _, id := range sorted {
			want[id] = true
		}
		after, last = predecessor(sorted[0]), sorted[len(sorted)-1]
	}
	for {
		page, err := b.DeadLettersAfter(ctx, after, resolvePage)
		if err != nil {
			return nil, nil, fmt.Errorf("read the dead letters to change: %w", err)
		}
		for _, d := range page {
			if !all && compareIDs(d.ID, last) > 0 {
				page = nil
				break
			}
			if all || want[d.ID] {
				found = append(found, d)
				delete(want, d.ID)
			}
		}
		if len(page) < resolvePage {
			break
		}
		after = page[len(page)-1].ID
	}
	return found, slices.SortedFunc(maps.Keys(want), compareIDs), nil
}

// IDs are the ids of dead letters.
func IDs(dls []buffer.DeadLetter) []string {
	out := make([]string, len(dls))
	for i, d := range dls {
		out[i] = d.ID
	}
	return out
}

// splitID reads "<ms>-<seq>"; ok false for anything else.
func splitID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// compareIDs orders stream ids numerically.
func compareIDs(a, b string) int {
	am, as, _ := splitID(a)
	bm, bs, _ := splitID(b)
	return cmp.Or(cmp.Compare(am, bm), cmp.Compare(as, bs))
}

// predecessor is the id just before id ("" for the first possible).
func predecessor(id string) string {
	ms, seq, ok := splitID(id)
	switch {
	case !ok || (ms == 0 && seq == 0):
		return ""
	case seq > 0:
		return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq-1, 10)
	default:
		return strconv.FormatUint(ms-1, 10) + "-18446744073709551615"
	}
}

// Digests are rule files with the SHA-256 of their content as it is now.
func Digests(files []string) []audit.FileDigest {
	out := make([]audit.FileDigest, 0, len(files))
	for _, f := range files {
		d := audit.FileDigest{Path: f}
		if sum, err := fileSHA256(f); err != nil {
			d.Error = "unreadable: " + err.Error()
		} else {
			d.SHA256 = sum
		}
		out = append(out, d)
	}
	return out
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
