//go:build !unix

package audit

import "os"

// lockFile is a no-op without flock: only the writes of one process are
// serialised (by FileSink's mutex).
func lockFile(*os.File) (unlock func(), err error) { return func() {}, nil }
