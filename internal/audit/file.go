package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// LogSinkName is the metric label of the JSON-lines sink (file or standard
// output); RedisSinkName that of the Redis stream.
const (
	LogSinkName   = "log"
	RedisSinkName = "redis"
)

// maxLine bounds how far back FileSink looks for the last line's start.
const maxLine = 4 << 20

// link is a chain's end: the last entry's seq and hash.
type link struct {
	seq  uint64
	hash string
}

// FileSink appends entries as JSON lines to a file. Every append opens the
// file, takes an exclusive flock, reads the file's last entry to chain the
// new one to it, writes the line in one write and fsyncs before it
// returns; a failed write is truncated away, so the file never ends in part
// of an entry. Several processes (the worker, the CLI commands) can append
// to one file: the flock puts their entries on one chain. A file emptied by
// rotation continues the chain from the last entry this process wrote.
// Opening per append also follows a rotated file. A path that is not a
// regular file (a device, a pipe) is written without the tail read: the
// chain is this process's.
type FileSink struct {
	path string
	mu   sync.Mutex
	last link
}

// NewFileSink checks that path can be appended to (creating it with mode
// 0600) and that it ends in a complete audit entry, and returns its sink.
func NewFileSink(path string) (*FileSink, error) {
	f := &FileSink{path: path}
	fh, regular, err := f.open()
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if regular {
		if _, err := tailLink(fh); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", path, err)
		}
	}
	return f, nil
}

// Name implements Sink.
func (f *FileSink) Name() string { return LogSinkName }

func (f *FileSink) open() (*os.File, bool, error) {
	flag := os.O_RDWR | os.O_APPEND | os.O_CREATE
	if fi, err := os.Stat(f.path); err == nil && !fi.Mode().IsRegular() {
		flag = os.O_WRONLY | os.O_APPEND
	}
	fh, err := os.OpenFile(f.path, flag, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("open audit log: %w", err)
	}
	fi, err := fh.Stat()
	if err != nil {
		_ = fh.Close()
		return nil, false, fmt.Errorf("open audit log: %w", err)
	}
	return fh, fi.Mode().IsRegular(), nil
}

// Append implements Sink.
func (f *FileSink) Append(_ context.Context, e Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fh, regular, err := f.open()
	if err != nil {
		return err
	}
	defer fh.Close()
	end, size := f.last, int64(0)
	if regular {
		unlock, err := lockFile(fh)
		if err != nil {
			return fmt.Errorf("lock audit log: %w", err)
		}
		defer unlock()
		fi, err := fh.Stat()
		if err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		if size = fi.Size(); size > 0 {
			if end, err = tailLink(fh); err != nil {
				return fmt.Errorf("audit log: %w", err)
			}
		}
	}
	e.Seq, e.Prev = end.seq+1, end.hash
	line, err := Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	_, werr := fh.Write(append(line, '\n'))
	if werr == nil && regular {
		werr = fh.Sync()
	}
	if werr != nil {
		if regular {
			_ = fh.Truncate(size) // no partial or undurable entry stays behind
		}
		return fmt.Errorf("write audit log: %w", werr)
	}
	f.last = link{e.Seq, Hash(line)}
	return nil
}

// tailLink reads the seq and hash of the last line of a non-empty file.
func tailLink(fh *os.File) (link, error) {
	fi, err := fh.Stat()
	if err != nil {
		return link{}, err
	}
	size := fi.Size()
	if size == 0 {
		return link{}, nil
	}
	line, err := lastLine(fh, size)
	if err != nil {
		return link{}, err
	}
	var head chainHead
	if err := json.Unmarshal(line, &head); err != nil || head.Seq == 0 || head.Prev == nil {
		return link{}, errors.New("the last line is not an audit entry; check the file with authpipe audit verify")
	}
	return link{head.Seq, Hash(line)}, nil
}

// lastLine returns the last line of a file that ends with a line break.
func lastLine(r io.ReaderAt, size int64) ([]byte, error) {
	var last [1]byte
	if _, err := r.ReadAt(last[:], size-1); err != nil {
		return nil, err
	}
	if last[0] != '\n' {
		return nil, errors.New("the file ends in part of a line (a crash while writing?); check it with authpipe audit verify")
	}
	end := size - 1 // the line break
	const chunk = 64 << 10
	var buf []byte
	for start := end; ; {
		n := min(int64(chunk), start)
		start -= n
		b := make([]byte, n)
		if _, err := r.ReadAt(b, start); err != nil {
			return nil, err
		}
		buf = append(b, buf...)
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			return buf[i+1:], nil
		}
		if start == 0 {
			return buf, nil
		}
		if int64(len(buf)) > maxLine {
			return nil, fmt.Errorf("the last line is longer than %d bytes", maxLine)
		}
	}
}

// WriterSink writes entries as JSON lines to a stream such as standard
// output, for a log collector. Its chain is this process's: the first line
// a process writes starts a new chain (seq 1), so only a file or the Redis
// stream can be verified across restarts.
type WriterSink struct {
	w    io.Writer
	mu   sync.Mutex
	last link
}

// NewWriterSink returns a sink writing to w.
func NewWriterSink(w io.Writer) *WriterSink { return &WriterSink{w: w} }

// Name implements Sink.
func (s *WriterSink) Name() string { return LogSinkName }

// Append implements Sink.
func (s *WriterSink) Append(_ context.Context, e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.Seq, e.Prev = s.last.seq+1, s.last.hash
	line, err := Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	if _, err := s.w.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write audit entry: %w", err)
	}
	s.last = link{e.Seq, Hash(line)}
	return nil
}
