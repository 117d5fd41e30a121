// libfuse3's low-level API, as Debian's libfuse3-dev ships it.
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
