/// The size of the filesystem holding the store, without the per-volume accounting of
/// `capacity()` (which reads every layer and volume row): cheap enough for every CreateVolume.
extension BlockStore {
    public func filesystemSpace() throws -> (totalBytes: UInt64, freeBytes: UInt64) {
        let space = try SystemDirectory.space(of: directory)
        return (space.total, space.free)
    }
}
