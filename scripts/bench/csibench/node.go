package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
)

// The driver name kubelet puts in its staging paths (strata-csi's default --drivername).
const driverName = "strata.csi.dev"

type publishedVolume struct {
	VolumeID    string `json:"volume_id"`
	StagingPath string `json:"staging_path"`
	TargetPath  string `json:"target_path"`
	SizeBytes   int64  `json:"size_bytes"`
}

// runNodeUp creates a Block volume, stages it and publishes it, laying paths out as kubelet does,
// and prints where the device node was published.
func runNodeUp(arguments []string) error {
	flags := flag.NewFlagSet("node-up", flag.ExitOnError)
	socket := flags.String("socket", "", "driver socket path")
	kubelet := flags.String("kubelet-dir", "", "the driver's --kubelet-dir")
	name := flags.String("name", "bench-node", "volume name")
	size := flags.Int64("size", 2<<30, "volume size in bytes")
	flags.Parse(arguments)
	if *socket == "" || *kubelet == "" {
		return fmt.Errorf("-socket and -kubelet-dir are required")
	}
	conn, err := dial(*socket)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	controller, node := csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	block := capability(true)

	ctx, cancel := callContext()
	defer cancel()
	created, err := controller.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               *name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: *size},
		VolumeCapabilities: []*csi.VolumeCapability{block},
	})
	if err != nil {
		return fmt.Errorf("CreateVolume: %w", err)
	}
	id := created.Volume.VolumeId
	volume := publishedVolume{
		VolumeID:    id,
		StagingPath: filepath.Join(*kubelet, "plugins/kubernetes.io/csi", driverName, id, "globalmount"),
		TargetPath:  filepath.Join(*kubelet, "plugins/kubernetes.io/csi/volumeDevices/publish", id, "bench-pod"),
		SizeBytes:   created.Volume.CapacityBytes,
	}
	// kubelet creates the staging directory and the target's parent; the driver the rest.
	err = func() error {
		if err := os.MkdirAll(volume.StagingPath, 0o750); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(volume.TargetPath), 0o750); err != nil {
			return err
		}
		if _, err := node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
			VolumeId: id, StagingTargetPath: volume.StagingPath, VolumeCapability: block,
		}); err != nil {
			return fmt.Errorf("NodeStageVolume: %w", err)
		}
		if _, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: id, StagingTargetPath: volume.StagingPath, TargetPath: volume.TargetPath, VolumeCapability: block,
		}); err != nil {
			return fmt.Errorf("NodePublishVolume: %w", err)
		}
		return nil
	}()
	if err != nil {
		// Leave nothing behind: the caller only learns the volume's id on success.
		if undo := tearDown(controller, node, id, volume.StagingPath, volume.TargetPath); undo != nil {
			return fmt.Errorf("%v (and undoing it: %v)", err, undo)
		}
		return err
	}
	return printJSON(volume)
}

// runNodeDown undoes node-up.
func runNodeDown(arguments []string) error {
	flags := flag.NewFlagSet("node-down", flag.ExitOnError)
	socket := flags.String("socket", "", "driver socket path")
	id := flags.String("volume-id", "", "volume id")
	staging := flags.String("staging", "", "staging path")
	target := flags.String("target", "", "target path")
	flags.Parse(arguments)
	if *socket == "" || *id == "" {
		return fmt.Errorf("-socket and -volume-id are required")
	}
	conn, err := dial(*socket)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	return tearDown(csi.NewControllerClient(conn), csi.NewNodeClient(conn), *id, *staging, *target)
}

// tearDown unpublishes, unstages and deletes, trying every step even if an earlier one fails.
func tearDown(controller csi.ControllerClient, node csi.NodeClient, id, staging, target string) error {
	ctx, cancel := callContext()
	defer cancel()
	var failures []string
	if target != "" {
		if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
			failures = append(failures, "NodeUnpublishVolume: "+err.Error())
		}
	}
	if staging != "" {
		if _, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			failures = append(failures, "NodeUnstageVolume: "+err.Error())
		}
	}
	if _, err := controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		failures = append(failures, "DeleteVolume: "+err.Error())
	}
	if len(failures) > 0 {
		return fmt.Errorf("%v", failures)
	}
	return nil
}
