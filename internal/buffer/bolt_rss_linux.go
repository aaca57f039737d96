package buffer

import "syscall"

// releaseMapped drops the process's mapping of size bytes of the file
// mapped at addr (MADV_DONTNEED). Errors are ignored: the pages then stay
// resident, which costs memory, not correctness.
func releaseMapped(addr uintptr, size int64) {
	if size <= 0 {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(size), syscall.MADV_DONTNEED)
}
