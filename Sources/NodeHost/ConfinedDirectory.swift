import Glibc

/// One directory (kubelet's) that mounts, unmounts and the directories and files created for
/// them must never leave. Every path is opened by the kernel's own confinement (openat2 with
/// RESOLVE_BENEATH, from a descriptor of the root), so a symbolic link swapped into a path after
/// the request was checked cannot lead anything outside: not a mount, not an unmount, not even a
/// `mkdir`. Links that stay inside are followed.
struct ConfinedDirectory {
    /// As configured, and as the kernel names it (the configured one may pass through links).
    let root: String
    let canonicalRoot: String

    init(_ root: String) {
        let trimmed = String(root.reversed().drop { $0 == "/" }.reversed())
        self.root = trimmed
        canonicalRoot = Syscall.canonicalPath(trimmed.isEmpty ? "/" : trimmed)
    }

    /// Opens `path` (which must lie strictly inside) with `flags`; O_CREAT takes `mode`.
    func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
        let components = try inside(path)
        return try withRoot { root in try beneath(root, components.joined(separator: "/"), flags, mode: mode, naming: path) }
    }

    /// Opens the directory holding `path` (O_PATH) and passes it with `path`'s last name.
    func withParent<T>(of path: String, _ body: (Int32, String) throws -> T) throws -> T {
        let components = try inside(path)
        let parent = components.dropLast().joined(separator: "/")
        return try withRoot { root in
            let fd = try beneath(root, parent.isEmpty ? "." : parent, Syscall.pathOnly | O_DIRECTORY, naming: path)
            defer { Syscall.close(fd) }
            return try body(fd, components.last!)
        }
    }

    /// `mkdir -p` inside: each missing directory is made through a descriptor of its parent,
    /// itself opened beneath the root.
    func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        let components = try inside(path)
        try withRoot { root in
            var parent = root
            defer { if parent != root { Syscall.close(parent) } }
            for depth in 1...components.count {
                let prefix = components[0..<depth].joined(separator: "/")
                let opened: Int32
                do {
                    opened = try beneath(root, prefix, Syscall.pathOnly | O_DIRECTORY, naming: path)
                } catch let error as NodeHostError where error.errno == ENOENT {
                    try Syscall.makeDirectory(in: parent, named: components[depth - 1], mode: mode, naming: path)
                    opened = try beneath(root, prefix, Syscall.pathOnly | O_DIRECTORY, naming: path)
                }
                if parent != root { Syscall.close(parent) }
                parent = opened
            }
        }
    }

    /// Creates an empty file at `path` (and its directories) unless something is there already;
    /// what is there is never opened (it may be a device node).
    func makeFile(_ path: String, mode: mode_t = 0o640) throws {
        let components = try inside(path)
        if components.count > 1 {
            try makeDirectories(canonicalRoot + "/" + components.dropLast().joined(separator: "/"))
        }
        do {
            Syscall.close(try open(path, O_WRONLY | O_CREAT | O_EXCL, mode: mode))
        } catch let error as NodeHostError where error.errno == EEXIST {
        }
    }

    /// The names leading from the root to `path`; throws unless `path` lies strictly inside.
    /// Its deepest existing ancestor is made canonical first, so links that stay inside (even
    /// absolute ones, which RESOLVE_BENEATH refuses) are fine; the open that follows is what
    /// enforces the confinement, so a link swapped in after this cannot lead outside.
    private func inside(_ path: String) throws -> [String] {
        var ancestors = path.split(separator: "/").map(String.init)
        guard path.hasPrefix("/"), let last = ancestors.popLast() else { throw outside(path) }
        var names = [last]
        var ancestor = Syscall.resolvedPath("/" + ancestors.joined(separator: "/"))
        while ancestor == nil, let name = ancestors.popLast() {
            names.insert(name, at: 0)
            ancestor = Syscall.resolvedPath("/" + ancestors.joined(separator: "/"))
        }
        guard let ancestor, !names.contains(".."), !names.contains(".") else { throw outside(path) }
        let components = ancestor.split(separator: "/").map(String.init) + names
        let rootComponents = canonicalRoot.split(separator: "/").map(String.init)
        guard components.count > rootComponents.count, Array(components.prefix(rootComponents.count)) == rootComponents else {
            throw outside(path)
        }
        return Array(components.dropFirst(rootComponents.count))
    }

    private func outside(_ path: String) -> NodeHostError {
        NodeHostError(.invalidArgument, "\(path) is not inside \(root): refusing to mount, unmount or create there")
    }

    private func withRoot<T>(_ body: (Int32) throws -> T) throws -> T {
        let fd = try Syscall.open(canonicalRoot, Syscall.pathOnly | O_DIRECTORY)
        defer { Syscall.close(fd) }
        return try body(fd)
    }

    private func beneath(_ root: Int32, _ relative: String, _ flags: Int32, mode: mode_t = 0, naming path: String) throws -> Int32 {
        do {
            return try Syscall.openBeneath(root, relative, flags, mode: mode, naming: path)
        } catch let error as NodeHostError where error.errno == EXDEV || error.errno == ELOOP {
            throw outside(path)
        }
    }
}
