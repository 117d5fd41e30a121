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

#include <linux/stat.h>
/// The device number of the filesystem open as `fd` (an O_PATH descriptor will do), from the
/// VFS alone: statx with AT_STATX_DONT_SYNC and no attributes asked sends FUSE no request, so
/// this answers for a connection nobody serves. glibc declares statx only under _GNU_SOURCE.
static inline int strata_filesystem_device(int fd, unsigned int *major_number, unsigned int *minor_number) {
    struct statx result;
    long status = syscall(SYS_statx, fd, "", 0x1000 /* AT_EMPTY_PATH */ | 0x4000 /* AT_STATX_DONT_SYNC */, 0U, &result);
    if (status != 0) return -1;
    *major_number = result.stx_dev_major;
    *minor_number = result.stx_dev_minor;
    return 0;
}

static inline dev_t strata_makedev(unsigned int major_number, unsigned int minor_number) {
    return makedev(major_number, minor_number);
}
static inline unsigned int strata_major(dev_t device) { return major(device); }
static inline unsigned int strata_minor(dev_t device) { return minor(device); }

// MARK: Resuming a FUSE connection in a new process

#include <errno.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>

/// FUSE_NOTIFY_RESEND (Linux 6.9, protocol 7.40): Debian's linux/fuse.h (7.38) lacks it.
#define STRATA_FUSE_NOTIFY_RESEND 7

/// Hands libfuse a FUSE_INIT as the kernel sent it to the previous process: libfuse answers
/// every request before INIT with EIO, and a resumed connection will not send INIT again. The
/// reply goes to a request id the kernel never issued (even, far above its counter), which it
/// refuses with ENOENT; libfuse ignores that error.
static inline void strata_fuse_synthetic_init(struct fuse_session *session, uint32_t minor, uint32_t max_readahead) {
    struct {
        struct fuse_in_header header;
        struct fuse_init_in init;
    } request;
    memset(&request, 0, sizeof request);
    request.header.len = sizeof request;
    request.header.opcode = FUSE_INIT;
    request.header.unique = 1ULL << 62;
    request.init.major = FUSE_KERNEL_VERSION;
    request.init.minor = minor;
    request.init.max_readahead = max_readahead;
    // What Strata asks of the kernel (FuseExporter.configure): libfuse sizes its buffers for
    // max_pages only when offered FUSE_MAX_PAGES.
    request.init.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_MAX_PAGES;
    struct fuse_buf buffer;
    memset(&buffer, 0, sizeof buffer);
    buffer.size = sizeof request;
    buffer.mem = &request;
    fuse_session_process_buf(session, &buffer);
}

/// Asks the kernel to queue again every request a dead server had read but not answered.
/// Returns 0 or -errno.
static inline int strata_fuse_notify_resend(int fd) {
    struct fuse_out_header header = { .len = sizeof(struct fuse_out_header), .error = STRATA_FUSE_NOTIFY_RESEND, .unique = 0 };
    ssize_t written = write(fd, &header, sizeof header);
    return written == (ssize_t)sizeof header ? 0 : -errno;
}

#include <sys/mman.h>

/// One worker of the session loop: receives and processes requests until the session exits
/// (returns 0) or the connection fails (returns -errno). Instead of libfuse's own loop, so that
/// the receive buffer is allocated and faulted in before the first request: the kernel copies
/// a request into it while the request sits on no queue the resend covers, and a copy that
/// must fault pages in fails (EIO to the caller) if the process is being killed. Resident
/// pages make that window a plain memcpy. `size` must exceed the largest request
/// (max_write plus headers): libfuse reads up to its own buffer size into it.
static inline int strata_fuse_serve(struct fuse_session *session, size_t size) {
    // The thread may have been created with every signal blocked (from a Dispatch thread):
    // SIGUSR2 must reach it, to end a blocking read when the session is suspended.
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (memory == MAP_FAILED) return -errno;
    struct fuse_buf buffer;
    memset(&buffer, 0, sizeof buffer);
    buffer.mem = memory;
    buffer.size = size;
    int result = 0;
    while (!fuse_session_exited(session)) {
        int received = fuse_session_receive_buf(session, &buffer);
        if (received == -EINTR || received == -EAGAIN) continue;
        if (received <= 0) {
            if (received < 0) {
                result = received;
                fuse_session_exit(session);
            }
            break;
        }
        fuse_session_process_buf(session, &buffer);
    }
    munmap(memory, size);
    return result;
}

static void strata_wake_handler(int signal_number) { (void)signal_number; }

/// Installs a do-nothing SIGUSR2 handler without SA_RESTART, once: a thread signalled with it
/// returns from a blocking wait with EINTR (libfuse's loop then sees that the session exited).
static inline int strata_install_wake_handler(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = strata_wake_handler;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGUSR2, &action, NULL);
}

static inline pthread_t strata_current_thread(void) { return pthread_self(); }
static inline int strata_wake_thread(pthread_t thread) { return pthread_kill(thread, SIGUSR2); }

/// Atomic pointer slots: the inode table FUSE requests read without a lock.
static inline void *strata_load_pointer(void *const *slot) { return __atomic_load_n(slot, __ATOMIC_ACQUIRE); }
static inline void *strata_exchange_pointer(void **slot, void *value) { return __atomic_exchange_n(slot, value, __ATOMIC_ACQ_REL); }

#endif
