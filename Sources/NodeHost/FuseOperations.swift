import CFuse3
import Foundation
import Glibc
import Logging

/// The libfuse low-level callbacks. They are C function pointers: no captures; each reaches
/// the exporter through the session's userdata and an open file through `fuse_file_info.fh`.
///
/// The tree is flat: the root directory (inode 1) holds one regular file per export.
enum FuseOperations {
    static func makeTable() -> fuse_lowlevel_ops {
        var table = fuse_lowlevel_ops()
        table.`init` = { userdata, connection in
            guard let userdata, let connection else { return }
            Unmanaged<FuseExporter>.fromOpaque(userdata).takeUnretainedValue().configure(connection)
        }
        table.lookup = { request, parent, name in FuseOperations.lookup(request, parent, name) }
        table.getattr = { request, inode, _ in FuseOperations.getattr(request, inode) }
        table.setattr = { request, inode, attributes, toSet, _ in FuseOperations.setattr(request, inode, attributes, toSet) }
        table.open = { request, inode, info in FuseOperations.open(request, inode, info) }
        table.release = { request, _, info in FuseOperations.release(request, info) }
        table.read = { request, _, size, offset, info in FuseOperations.read(request, size, offset, info) }
        table.write = { request, _, bytes, size, offset, info in FuseOperations.write(request, bytes, size, offset, info) }
        table.fsync = { request, _, _, info in FuseOperations.fsync(request, info) }
        table.fallocate = { request, _, mode, offset, length, info in
            FuseOperations.fallocate(request, mode, offset, length, info)
        }
        table.readdir = { request, inode, size, offset, _ in FuseOperations.readdir(request, inode, size, offset) }
        table.statfs = { request, _ in FuseOperations.statfs(request) }
        return table
    }

    static let rootInode = fuse_ino_t(FUSE_ROOT_ID)

    private static func exporter(_ request: fuse_req_t?) -> FuseExporter {
        Unmanaged<FuseExporter>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    /// The file a handle names: the handle is the inode number (see `InodeTable`). Nil for an
    /// inode this process does not serve (one whose descriptor it refused after a restart).
    private static func openFile(_ request: fuse_req_t?, _ info: UnsafeMutablePointer<fuse_file_info>?) -> ExportedFile? {
        guard let info else { return nil }
        return exporter(request).file(inode: info.pointee.fh)
    }

    private static func reply(_ request: fuse_req_t?, error: Int32) {
        _ = fuse_reply_err(request, error)
    }

    // MARK: Names and attributes

    private static func lookup(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        let exporter = exporter(request)
        guard parent == rootInode, let name, let file = exporter.file(named: String(cString: name)) else {
            return reply(request, error: ENOENT)
        }
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(file.inode)
        entry.generation = file.generation
        entry.attr = file.attributes(modified: exporter.startTime)
        entry.attr_timeout = exporter.options.attributeTimeout
        entry.entry_timeout = exporter.options.attributeTimeout
        _ = fuse_reply_entry(request, &entry)
    }

    private static func getattr(_ request: fuse_req_t?, _ inode: fuse_ino_t) {
        let exporter = exporter(request)
        var attributes: stat
        if inode == rootInode {
            attributes = rootAttributes(exporter)
        } else if let file = exporter.file(inode: UInt64(inode)) {
            attributes = file.attributes(modified: exporter.startTime)
        } else {
            return reply(request, error: ENOENT)
        }
        _ = fuse_reply_attr(request, &attributes, exporter.options.attributeTimeout)
    }

    /// Only a no-op size change is accepted (the size is the backend's); mode, owner and time
    /// changes are ignored so tools that set them do not fail.
    private static func setattr(_ request: fuse_req_t?, _ inode: fuse_ino_t, _ requested: UnsafeMutablePointer<stat>?, _ toSet: Int32) {
        let exporter = exporter(request)
        if inode == rootInode {
            var attributes = rootAttributes(exporter)
            _ = fuse_reply_attr(request, &attributes, exporter.options.attributeTimeout)
            return
        }
        guard let file = exporter.file(inode: UInt64(inode)) else { return reply(request, error: ENOENT) }
        if toSet & FUSE_SET_ATTR_SIZE != 0, let requested, UInt64(clamping: requested.pointee.st_size) != file.backend.size {
            exporter.logger.warning("refused to change the size of an exported file",
                                    metadata: ["name": "\(file.name)", "requested": "\(requested.pointee.st_size)"])
            return reply(request, error: EPERM)
        }
        var attributes = file.attributes(modified: exporter.startTime)
        _ = fuse_reply_attr(request, &attributes, exporter.options.attributeTimeout)
    }

    private static func rootAttributes(_ exporter: FuseExporter) -> stat {
        var attributes = stat()
        attributes.st_ino = __ino_t(rootInode)
        attributes.st_mode = S_IFDIR | 0o700  // only root (the driver, kubelet, the loop driver) looks inside
        attributes.st_nlink = 2
        attributes.st_atim = exporter.startTime
        attributes.st_mtim = exporter.startTime
        attributes.st_ctim = exporter.startTime
        return attributes
    }

    private static func readdir(_ request: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t) {
        let exporter = exporter(request)
        guard inode == rootInode else { return reply(request, error: ENOTDIR) }
        let entries: [(name: String, inode: UInt64, mode: mode_t)] =
            [(".", UInt64(rootInode), S_IFDIR), ("..", UInt64(rootInode), S_IFDIR)]
            + exporter.allFiles().map { ($0.name, $0.inode, S_IFREG) }
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(size, 1))
        defer { buffer.deallocate() }
        var used = 0
        for (index, entry) in entries.enumerated() where index >= Int(offset) {
            var attributes = stat()
            attributes.st_ino = __ino_t(entry.inode)
            attributes.st_mode = entry.mode
            let needed = fuse_add_direntry(request, buffer + used, size - used, entry.name, &attributes, off_t(index + 1))
            if needed > size - used { break }
            used += needed
        }
        _ = fuse_reply_buf(request, buffer, used)
    }

    private static func statfs(_ request: fuse_req_t?) {
        let files = exporter(request).allFiles()
        var result = statvfs()
        result.f_bsize = 4096  // the loop driver uses this as its discard granularity
        result.f_frsize = 4096
        result.f_blocks = fsblkcnt_t(files.reduce(0) { $0 + $1.backend.size / 4096 })
        result.f_files = fsfilcnt_t(files.count + 1)
        result.f_namemax = UInt(ExportedFile.maximumNameLength)
        _ = fuse_reply_statfs(request, &result)
    }

    // MARK: Open files

    /// Every open is direct I/O: no FUSE page cache under the block device's, so reads always
    /// reach the backend and no invalidation is ever needed for coherence.
    private static func open(_ request: fuse_req_t?, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let exporter = exporter(request)
        guard let info else { return reply(request, error: EINVAL) }
        if inode == rootInode { return reply(request, error: EISDIR) }
        guard let file = exporter.file(inode: UInt64(inode)) else { return reply(request, error: ENOENT) }
        info.pointee.direct_io = 1
        info.pointee.keep_cache = 0
        info.pointee.noflush = 1
        info.pointee.fh = file.inode
        file.openHandles.add(1, ordering: .relaxed)
        if fuse_reply_open(request, info) != 0 {
            // The opener was interrupted: no release will come for this handle.
            file.openHandles.subtract(1, ordering: .relaxed)
        }
    }

    private static func release(_ request: fuse_req_t?, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard info != nil else { return reply(request, error: EINVAL) }
        // A handle opened by a previous process was never counted here.
        if let file = openFile(request, info), file.openHandles.load(ordering: .relaxed) > 0,
           file.openHandles.subtract(1, ordering: .relaxed).newValue == 0 {
            exporter(request).didReleaseLastHandle(of: file)
        }
        reply(request, error: 0)
    }

    private static func read(_ request: fuse_req_t?, _ requested: Int, _ offset: off_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard let file = openFile(request, info) else { return reply(request, error: EIO) }
        let size = file.backend.size
        guard offset >= 0 else { return reply(request, error: EINVAL) }
        guard UInt64(offset) < size, requested > 0 else {
            _ = fuse_reply_buf(request, nil, 0)
            return
        }
        let count = Int(min(UInt64(requested), size - UInt64(offset)))
        let exporter = exporter(request)
        exporter.buffers.withBuffer(count: count) { buffer in
            let region = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            do {
                try file.backend.read(into: region, at: UInt64(offset))
                _ = fuse_reply_buf(request, region.baseAddress, count)
            } catch {
                fail(request, exporter, file, "read", offset: offset, length: count, error)
            }
        }
    }

    private static func write(_ request: fuse_req_t?, _ bytes: UnsafePointer<CChar>?, _ requested: Int, _ offset: off_t,
                              _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard let file = openFile(request, info) else { return reply(request, error: EIO) }
        let size = file.backend.size
        guard offset >= 0 else { return reply(request, error: EINVAL) }
        guard requested > 0 else {
            _ = fuse_reply_write(request, 0)
            return
        }
        // The file cannot grow by writing: its size is the backend's.
        guard UInt64(offset) < size else { return reply(request, error: ENOSPC) }
        let count = Int(min(UInt64(requested), size - UInt64(offset)))
        do {
            try file.backend.write(UnsafeRawBufferPointer(start: bytes, count: count), at: UInt64(offset))
            _ = fuse_reply_write(request, count)
        } catch {
            fail(request, exporter(request), file, "write", offset: offset, length: count, error)
        }
    }

    private static func fsync(_ request: fuse_req_t?, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard let file = openFile(request, info) else { return reply(request, error: EIO) }
        do {
            try file.backend.flush()
            reply(request, error: 0)
        } catch {
            fail(request, exporter(request), file, "flush", offset: 0, length: 0, error)
        }
    }

    /// PUNCH_HOLE becomes `discard` (the loop driver sends it for DISCARD and WRITE_ZEROES);
    /// ZERO_RANGE writes zeros; plain preallocation inside the file succeeds as a no-op.
    /// Nothing may extend the file.
    private static func fallocate(_ request: fuse_req_t?, _ mode: Int32, _ offset: off_t, _ length: off_t,
                                  _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard let file = openFile(request, info) else { return reply(request, error: EIO) }
        let keepSize = FALLOC_FL_KEEP_SIZE, punchHole = FALLOC_FL_PUNCH_HOLE, zeroRange = FALLOC_FL_ZERO_RANGE
        guard mode & ~(keepSize | punchHole | zeroRange) == 0 else { return reply(request, error: EOPNOTSUPP) }
        guard offset >= 0, length > 0 else { return reply(request, error: EINVAL) }
        let size = file.backend.size
        let start = UInt64(offset)
        let (end, overflow) = start.addingReportingOverflow(UInt64(length))
        if overflow { return reply(request, error: EFBIG) }
        if end > size && mode & keepSize == 0 { return reply(request, error: EFBIG) }
        let clampedEnd = min(end, size)
        guard start < clampedEnd else { return reply(request, error: 0) }
        do {
            if mode & punchHole != 0 {
                try file.backend.discard(at: start, length: clampedEnd - start)
            } else if mode & zeroRange != 0 {
                try writeZeros(file, exporter(request), from: start, to: clampedEnd)
            }
            reply(request, error: 0)
        } catch {
            fail(request, exporter(request), file, "fallocate(mode \(mode))", offset: offset, length: Int(clamping: length), error)
        }
    }

    private static func writeZeros(_ file: ExportedFile, _ exporter: FuseExporter, from start: UInt64, to end: UInt64) throws {
        try exporter.buffers.withBuffer(count: exporter.buffers.bufferSize) { buffer in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            var position = start
            while position < end {
                let count = Int(min(UInt64(buffer.count), end - position))
                try file.backend.write(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), at: position)
                position += UInt64(count)
            }
        }
    }

    private static func fail(_ request: fuse_req_t?, _ exporter: FuseExporter, _ file: ExportedFile, _ operation: String,
                             offset: off_t, length: Int, _ error: any Error) {
        let number = errorNumber(for: error)
        exporter.logger.error("backend \(operation) failed", metadata: [
            "name": "\(file.name)", "offset": "\(offset)", "length": "\(length)", "errno": "\(number)", "error": "\(error)",
        ])
        reply(request, error: number)
    }

    /// The errno the kernel sees for a backend error: its own when it carries one, EIO otherwise.
    static func errorNumber(for error: any Error) -> Int32 {
        if let error = error as? NodeHostError {
            if let number = error.errno { return number }
            switch error.code {
            case .resourceExhausted: return ENOSPC
            case .invalidArgument: return EINVAL
            case .unsupported: return EOPNOTSUPP
            default: return EIO
            }
        }
        if let error = error as? POSIXError { return error.code.rawValue }
        return EIO
    }
}

extension FuseExporter {
    /// Negotiates the connection: 1 MiB requests, many background requests for the loop
    /// driver's asynchronous direct I/O, and no splice: the backend works on memory buffers, so
    /// splicing would only add a copy from the pipe.
    func configure(_ connection: UnsafeMutablePointer<fuse_conn_info>) {
        let transfer = UInt32(options.maxTransferSize)
        connection.pointee.max_write = transfer
        connection.pointee.max_read = transfer
        connection.pointee.max_readahead = min(connection.pointee.max_readahead, transfer)
        connection.pointee.max_background = UInt32(options.maxBackground)
        connection.pointee.congestion_threshold = UInt32(max(1, options.maxBackground * 3 / 4))
        let capable = connection.pointee.capable
        var want = connection.pointee.want
        want |= capable & UInt32(FUSE_CAP_ASYNC_READ | FUSE_CAP_ASYNC_DIO)
        want &= ~UInt32(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE)
        connection.pointee.want = want
        let parameters = FuseInitParameters(protocolMinor: connection.pointee.proto_minor, maxReadahead: connection.pointee.max_readahead)
        state.withLock { state in if state.initParameters == nil { state.initParameters = parameters } }
        logger.debug("FUSE connection negotiated", metadata: [
            "protocol": "\(connection.pointee.proto_major).\(connection.pointee.proto_minor)",
            "maxWrite": "\(connection.pointee.max_write)", "maxBackground": "\(connection.pointee.max_background)",
        ])
    }
}
