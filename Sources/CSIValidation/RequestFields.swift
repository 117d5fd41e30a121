import CSIProto

/// Checks of the plain fields every CSI request carries.
package enum RequestFields {
    /// Names come from the CO (PV names are at most 253 bytes); the cap keeps the catalog and
    /// logs sane against hostile input.
    package static let maximumNameBytes = 1024
    /// Ids are ours (`vol-…`, `snap-…`), so anything longer is certainly not one of them.
    package static let maximumIDBytes = 128

    package static func requireName(_ name: String, field: String = "name") throws(CSIError) {
        guard !name.isEmpty else { throw .invalidArgument("\(field) is required") }
        guard name.utf8.count <= maximumNameBytes else {
            throw .invalidArgument("\(field) is \(name.utf8.count) bytes; at most \(maximumNameBytes) are allowed")
        }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw .invalidArgument("\(field) contains control characters")
        }
    }

    /// A present, plausibly sized id. Whether it exists is the store's business, and the store
    /// never turns an id into a path.
    package static func requireID(_ id: String, field: String) throws(CSIError) {
        guard !id.isEmpty else { throw .invalidArgument("\(field) is required") }
        guard id.utf8.count <= maximumIDBytes else { throw .invalidArgument("\(field) is too long to be a Strata id") }
    }

    /// A request value quoted for an error message, abbreviated when long: the caller needs to
    /// recognize it, not to receive back the megabyte it sent.
    package static func quoted(_ value: String, limit: Int = 64) -> String {
        guard value.unicodeScalars.count > limit else { return "\"\(value)\"" }
        return "\"\(String(value.unicodeScalars.prefix(limit)))…\" (\(value.utf8.count) bytes)"
    }

    package static func requireNonNegative(_ value: Int32, field: String) throws(CSIError) {
        guard value >= 0 else { throw .invalidArgument("\(field) must not be negative") }
    }
}
