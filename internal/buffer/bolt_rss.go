package buffer

import (
	"sync/atomic"

	"go.etcd.io/bbolt"
)

// releaseEvery is how many bytes of entries are appended and read between
// two releases of the file's mapped pages. A release costs a minor page
// fault per page touched again afterwards (well under a millisecond for
// 4 MiB); 16 MiB left up to 75 MB of the file resident during a catch-up.
const releaseEvery = 4 << 20

// residentFile bounds how much of the buffer file stays resident in the
// process. bbolt reads the file through a shared memory map; every page a
// read touches stays mapped, so draining a backlog of a million events
// would leave the whole file (about a gigabyte) counted in the process's
// resident set — page cache the kernel can drop, but RSS all the same. After
// every releaseEvery bytes read, the mapped pages are released
// (madvise MADV_DONTNEED: for a shared file mapping this only drops the
// process's page-table entries; the data stays in the file and the page
// cache, and the next access maps it again).
type residentFile struct {
	read atomic.Int64 // bytes of entries read since the last release
}

// noteRead counts n bytes read and releases the mapped pages when enough
// were read since the last release.
func (r *residentFile) noteRead(db *bbolt.DB, n int) {
	if r.read.Add(int64(n)) < releaseEvery {
		return
	}
	r.release(db)
}

// release releases the file's mapped pages now.
func (r *residentFile) release(db *bbolt.DB) {
	r.read.Store(0)
	// Inside a read transaction bbolt holds its mmap lock: the mapping
	// cannot move while its pages are released.
	_ = db.View(func(tx *bbolt.Tx) error {
		releaseMapped(db.Info().Data, tx.Size())
		return nil
	})
}
