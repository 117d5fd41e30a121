// libfuse3's low-level API, as Debian's libfuse3-dev ships it, plus the few Linux
// definitions NodeHost needs that Swift cannot import directly (variadic ioctl,
// function-like macros such as makedev and _IOR, O_DIRECT behind _GNU_SOURCE).
#ifndef STRATA_CFUSE3_SHIM_H
#define STRATA_CFUSE3_SHIM_H

// 3.12 gives the fuse_loop_cfg_* API (thread counts for the multi-threaded loop).
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/sysmacros.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

/// ioctl with a pointer argument (Swift cannot call the variadic ioctl).
static inline int strata_ioctl_ptr(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

/// ioctl with an integer argument.
static inline int strata_ioctl_int(int fd, unsigned long request, unsigned long argument) {
    return ioctl(fd, request, argument);
}

static inline unsigned long strata_blkgetsize64(void) { return BLKGETSIZE64; }
/// O_DIRECT without _GNU_SOURCE (glibc always defines the reserved spelling).
static inline int strata_o_direct(void) { return __O_DIRECT; }
/// O_PATH without _GNU_SOURCE: a descriptor that only names a file (for mounting through it).
static inline int strata_o_path(void) { return __O_PATH; }

// glibc declares fallocate only under _GNU_SOURCE.
extern int fallocate(int fd, int mode, off_t offset, off_t length);
/// fallocate(2), for punching holes and zeroing ranges.
static inline int strata_fallocate(int fd, int mode, off_t offset, off_t length) {
    return fallocate(fd, mode, offset, length);
}

/// Marks the calling thread (and threads it creates later) as part of the I/O path
/// (PR_SET_IO_FLUSHER: no recursion into I/O on memory reclaim). Needs CAP_SYS_RESOURCE.
static inline int strata_set_io_flusher(void) {
    return prctl(57 /* PR_SET_IO_FLUSHER */, 1UL, 0UL, 0UL, 0UL);
}

/// openat2(2) with RESOLVE_BENEATH: the kernel refuses, while resolving, any step that would
/// leave `directory` (`..`, an absolute or escaping symbolic link, a /proc magic link), with EXDEV.
/// glibc 2.36 has no wrapper. `mode` counts only with O_CREAT (openat2 rejects it otherwise).
static inline int strata_open_beneath(int directory, const char *path, int flags, unsigned int mode) {
    struct open_how how = {
        .flags = (unsigned long long)(unsigned int)flags,
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    return (int)syscall(SYS_openat2, directory, path, &how, sizeof how);
}

static inline dev_t strata_makedev(unsigned int major_number, unsigned int minor_number) {
    return makedev(major_number, minor_number);
}
static inline unsigned int strata_major(dev_t device) { return major(device); }
static inline unsigned int strata_minor(dev_t device) { return minor(device); }

#endif
