#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import BlockStore
@testable import CSIDriver
@testable import NodeHost
import StrataTestSupport
import Testing

/// What the filesystem above a staged volume sees when the store fails an I/O: the errno that
/// says why (a full pool is ENOSPC), not EIO for everything.
@Suite("Store errors at the kernel boundary", .blockingTolerant)
struct StoreErrnoTests {
    @Test("each store error reaches the kernel as its errno", arguments: [
        (StoreError.Code.noSpace, ENOSPC),
        (.outOfRange, EINVAL),
        (.invalidArgument, EINVAL),
        (.unrelated, EINVAL),
        (.busy, EBUSY),
        (.corrupt, EUCLEAN),
        (.notFound, ESTALE),
        (.alreadyExists, EEXIST),
        (.chainDepthLimit, EIO),
        (.io, EIO),
    ])
    func errno(code: StoreError.Code, expected: Int32) {
        let mapped = StoreVolumeBackend.kernelError(for: StoreError(code, "test"))
        #expect(FuseOperations.errorNumber(for: mapped) == expected)
    }
}
