// Open flags and calls glibc defines only under _GNU_SOURCE, which Swift's Glibc module does not
// set; the reserved spellings are always there. Header only: nothing to link.
#include <fcntl.h>

/// O_DIRECT: transfers between the caller's (aligned) buffer and the device, past the page cache.
static inline int strata_glibc_o_direct(void) { return __O_DIRECT; }

#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/// preadv2(fd, {buffer, count}, 1, offset, RWF_NOWAIT): reads only what the page cache holds
/// already, and fails EAGAIN rather than wait for the disk (EOPNOTSUPP where the filesystem
/// cannot say). glibc declares preadv2 only under _GNU_SOURCE, so the system call is made
/// directly (on 64-bit kernels the offset's high half is 0).
static inline long strata_pread_nowait(int fd, void *buffer, unsigned long count, unsigned long offset) {
    struct iovec piece = { buffer, count };
    return syscall(SYS_preadv2, fd, &piece, 1, offset, 0UL, 0x00000008 /* RWF_NOWAIT */);
}
