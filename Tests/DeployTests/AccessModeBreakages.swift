/// The mistakes the access-mode check exists for (issue 19): an example, a StorageProfile or a
/// live-migrating VM asking for an access mode and volume mode pair the driver refuses at
/// CreateVolume, or one KubeVirt cannot migrate. Each report must name the file, the access mode
/// and the volume mode, so the admin sees what to change before a PVC sits Pending.
extension Breakage {
    static let accessModes: [Breakage] = [
        Breakage(description: "a VM clone asking for ReadWriteMany Filesystem",
                 file: "examples/vm-clone.yaml",
                 original: "          volumeMode: Block\n", replacement: "          volumeMode: Filesystem\n",
                 expectedReport: "deploy/examples/vm-clone.yaml#0 VirtualMachine/fedora-vm-1-clone dataVolumeTemplate fedora-vm-1-clone-root: access mode ReadWriteMany with volumeMode Filesystem (as written) is refused by the driver"),
        Breakage(description: "a DataVolume asking for ReadOnlyMany Filesystem",
                 file: "examples/clone-from-pvc.yaml",
                 original: "    storageClassName: strata\n",
                 replacement: "    storageClassName: strata\n    accessModes:\n      - ReadOnlyMany\n    volumeMode: Filesystem\n",
                 expectedReport: "deploy/examples/clone-from-pvc.yaml#0 DataVolume/fedora-clone: access mode ReadOnlyMany with volumeMode Filesystem (as written) is refused by the driver (INVALID_ARGUMENT at CreateVolume): ReadOnlyMany is accepted with volumeMode Block only"),
        Breakage(description: "a StorageProfile offering ReadWriteMany Filesystem",
                 file: "cdi/storageprofile.yaml",
                 original: "        - ReadWriteMany\n      volumeMode: Block\n",
                 replacement: "        - ReadWriteMany\n      volumeMode: Filesystem\n",
                 expectedReport: "StorageProfile/strata-rwx: access mode ReadWriteMany with volumeMode Filesystem (a claimPropertySet) is refused by the driver"),
        Breakage(description: "a DataVolume asking for an access mode no claimPropertySet offers",
                 file: "examples/clone-from-snapshot.yaml",
                 original: "    storageClassName: strata\n",
                 replacement: "    storageClassName: strata\n    accessModes:\n      - ReadOnlyMany\n",
                 expectedReport: "deploy/examples/clone-from-snapshot.yaml#0 DataVolume/fedora-from-snapshot: it gives accessModes ['ReadOnlyMany'], and no claimPropertySet of its class's StorageProfile agrees with that"),
        Breakage(description: "a live-migrating VM on a ReadWriteOnce disk",
                 file: "examples/virtualmachine.yaml",
                 original: "            - ReadWriteMany\n", replacement: "            - ReadWriteOnce\n",
                 expectedReport: "deploy/examples/virtualmachine.yaml#0 VirtualMachine/fedora-vm-1: evictionStrategy LiveMigrate, but volume root (fedora-vm-1-root) is ReadWriteOnce Block"),
    ]
}
