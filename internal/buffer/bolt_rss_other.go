//go:build !linux

package buffer

// releaseMapped is a no-op where madvise is not wired up: the mapped pages
// stay resident until the kernel reclaims them.
func releaseMapped(uintptr, int64) {}
