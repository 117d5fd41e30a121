// Open flags glibc defines only under _GNU_SOURCE, which Swift's Glibc module does not set; the
// reserved spellings are always there. Header only: nothing to link.
#include <fcntl.h>

/// O_DIRECT: transfers between the caller's (aligned) buffer and the device, past the page cache.
static inline int strata_glibc_o_direct(void) { return __O_DIRECT; }
