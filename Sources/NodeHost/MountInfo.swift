import KernelFiles

/// One line of /proc/self/mountinfo, as NodeHost's API (`Mounter`, `FuseExporter`) hands it out;
/// the type and its reader live in KernelFiles, shared with the store and the tests.
public typealias MountInfo = KernelFiles.MountInfo
