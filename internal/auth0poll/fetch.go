package auth0poll

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/auth0/go-auth0/management"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// fetchPage asks api for the page after the log_id from and decodes it.
// It is what management.(*Management).Request does for a GET — the same
// request, the same errors for an error answer (a management.Error) —
// except that the body is read by auth0log.DecodePage in one pass instead
// of by encoding/json into []json.RawMessage and then once more per event,
// which matters at hundreds of pages a second. A body that is not a JSON
// array is a *pageDecodeError; an event that does not decode, an
// *auth0log.EventError inside one. The logs' Raw are slices of the body.
func fetchPage(ctx context.Context, api *management.Management, from string, take int) ([]auth0log.Log, error) {
	req, err := api.NewRequest(ctx, http.MethodGet, api.URI("logs"), nil,
		management.From(from), management.Take(take))
	if err != nil {
		return nil, fmt.Errorf("failed to create a new request: %w", err)
	}
	res, err := api.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to send the request: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode >= http.StatusBadRequest {
		return nil, newAPIError(res)
	}
	body, err := readAll(res.Body, res.ContentLength)
	if err != nil {
		return nil, fmt.Errorf("failed to read the response body: %w", err)
	}
	if len(body) == 0 || string(body) == "{}" {
		return nil, nil // go-auth0 leaves the payload alone for these
	}
	logs, err := auth0log.DecodePage(body)
	if err != nil {
		return nil, &pageDecodeError{err}
	}
	return logs, nil
}

// pageDecodeError is a 2xx answer whose body does not decode as a page of
// events.
type pageDecodeError struct{ error }

func (e *pageDecodeError) Unwrap() error { return e.error }

// apiError is go-auth0's error for an error answer (its managementError,
// which is not exported): the same fields, text and Status, so it satisfies
// management.Error like the original.
type apiError struct {
	StatusCode int    `json:"statusCode"`
	Err        string `json:"error"`
	Message    string `json:"message"`
}

var _ management.Error = (*apiError)(nil)

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.StatusCode, e.Err, e.Message) }

// Status returns the status code of the answer.
func (e *apiError) Status() int { return e.StatusCode }

// newAPIError is go-auth0's newError.
func newAPIError(res *http.Response) error {
	e := &apiError{}
	if err := json.NewDecoder(res.Body).Decode(e); err != nil {
		return &apiError{
			StatusCode: res.StatusCode,
			Err:        http.StatusText(res.StatusCode),
			Message:    fmt.Errorf("failed to decode json error response payload: %w", err).Error(),
		}
	}
	if e.Status() == 0 {
		e.StatusCode = res.StatusCode
		e.Err = http.StatusText(res.StatusCode)
	}
	return e
}

// prefetch is the request for the page after a full page, sent before that
// page is appended so that the two overlap: while catching up, the append's
// round trip to the buffer is no longer on the path from one page to the
// next. Requests stay one at a time (the next is sent only when the
// previous has been answered), paced as every request; the checkpoint
// still moves only after an append succeeds, and a prefetched page is used
// only if it starts where the checkpoint is.
type prefetch struct {
	from   string    // the log_id the page follows
	sent   time.Time // when it was asked for
	cancel context.CancelFunc
	done   chan struct{} // closed when logs and err are set
	logs   []auth0log.Log
	err    error
}

// startPrefetch asks for the page after from in the background.
func (p *Poller) startPrefetch(ctx context.Context, from string) {
	pctx, cancel := context.WithCancel(ctx)
	f := &prefetch{from: from, sent: p.clock.Now(), cancel: cancel, done: make(chan struct{})}
	api, take := p.api, p.cfg.PageSize // the loop may replace p.api meanwhile
	go func() {
		defer close(f.done)
		f.logs, f.err = fetchPage(pctx, api, from, take)
	}()
	p.pre = f
}

// takePrefetch returns the prefetched page after the checkpoint, waiting
// for its answer, or nil if there is none; a prefetch of any other page is
// dropped.
func (p *Poller) takePrefetch() *prefetch {
	f := p.pre
	if f == nil {
		return nil
	}
	if f.from != p.cp {
		p.dropPrefetch()
		return nil
	}
	p.pre = nil
	<-f.done
	f.cancel()
	return f
}

// dropPrefetch cancels an unused prefetch and waits until its request has
// ended.
func (p *Poller) dropPrefetch() {
	if p.pre == nil {
		return
	}
	p.pre.cancel()
	<-p.pre.done
	p.pre = nil
}

// readAll is io.ReadAll, in one buffer of the answer's length when it is
// known (an uncompressed answer; net/http leaves a gzipped one without):
// io.ReadAll's growing buffers allocated a few times a page's size.
func readAll(r io.Reader, length int64) ([]byte, error) {
	if length < 0 || length > maxPreallocBody {
		return io.ReadAll(r)
	}
	b := bytes.NewBuffer(make([]byte, 0, length+bytes.MinRead))
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// maxPreallocBody bounds what readAll allocates on the strength of a
// Content-Length: a page of 100 events is about 100 kB.
const maxPreallocBody = 4 << 20
