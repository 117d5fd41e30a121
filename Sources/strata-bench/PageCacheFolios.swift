import Foundation
import Glibc

/// How much of some files' cached data the kernel holds in multi-page folios.
///
/// Why the read figures need it: a cached 4 KiB read costs the kernel less when the page sits in
/// a large folio (a shorter page-cache walk, less page metadata competing for the CPU caches).
/// Filesystems with large folios (ext4 since Linux 6.16, XFS) build them when a file is written
/// or read sequentially in large pieces, as the plain file and a chain's bottom layer are; data
/// written cluster by cluster and read back in scattered cluster-sized pieces, as upper layers'
/// is, comes back as single pages. Printing the share for each side shows whether a gap in the
/// 4 KiB figures is the store's or the page cache's.
///
/// Reads /proc/self/pagemap and /proc/kpageflags, which need root (CAP_SYS_ADMIN); without them
/// the share is unknown (nil).
enum PageCacheFolios {
    /// The share (0–1) of the cached pages of `paths` that belong to multi-page folios, or nil
    /// when it cannot be measured (no privilege, or nothing cached).
    static func largeFolioShare(of paths: [String]) -> Double? {
        let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        let flags = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)
        defer {
            if pagemap >= 0 { close(pagemap) }
            if flags >= 0 { close(flags) }
        }
        guard pagemap >= 0, flags >= 0 else { return nil }
        var cached = 0
        var inLargeFolios = 0
        for path in paths {
            guard let (resident, large) = count(path: path, pagemap: pagemap, flags: flags) else { return nil }
            cached += resident
            inLargeFolios += large
        }
        return cached == 0 ? nil : Double(inLargeFolios) / Double(cached)
    }

    /// Cached pages of one file and how many of them are in multi-page folios; nil when page
    /// frame numbers are hidden from this process.
    private static func count(path: String, pagemap: Int32, flags: Int32) -> (Int, Int)? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return (0, 0) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_size > 0 else { return (0, 0) }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let length = Int(info.st_size)
        guard let mapping = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0), mapping != MAP_FAILED else { return (0, 0) }
        defer { munmap(mapping, length) }
        let pages = (length + pageSize - 1) / pageSize
        var residency = [UInt8](repeating: 0, count: pages)
        guard mincore(mapping, length, &residency) == 0 else { return (0, 0) }
        var resident = 0
        var large = 0
        var page = 0
        while page < pages {
            guard residency[page] & 1 != 0 else { page += 1; continue }
            var runEnd = page + 1
            while runEnd < pages, residency[runEnd] & 1 != 0 { runEnd += 1 }
            let runStart = mapping + page * pageSize
            // Map the run's cached pages into this process (no I/O: they are resident) so that
            // pagemap can name their frames. 22 is MADV_POPULATE_READ (Linux 5.14).
            guard madvise(runStart, (runEnd - page) * pageSize, 22) == 0 else { return nil }
            var entries = [UInt64](repeating: 0, count: runEnd - page)
            let firstVirtualPage = Int(bitPattern: runStart) / pageSize
            let bytes = entries.count * 8
            guard pread(pagemap, &entries, bytes, off_t(firstVirtualPage * 8)) == bytes else { return nil }
            for entry in entries where entry & (1 << 63) != 0 {
                let frame = entry & ((1 << 55) - 1)
                guard frame != 0 else { return nil }  // frames hidden: not root
                var pageFlags: UInt64 = 0
                guard pread(flags, &pageFlags, 8, off_t(frame * 8)) == 8 else { return nil }
                resident += 1
                // KPF_COMPOUND_HEAD (15) or KPF_COMPOUND_TAIL (16): one page of a larger folio.
                if pageFlags & (1 << 15 | 1 << 16) != 0 { large += 1 }
            }
            page = runEnd
        }
        return (resident, large)
    }
}
