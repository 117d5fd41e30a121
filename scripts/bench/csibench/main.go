// Command csibench drives strata-csi over gRPC the way the CSI sidecars and kubelet do (grpc-go,
// one long-lived connection over a Unix socket) for the benchmark scripts in scripts/:
//
//	csibench clones    -socket S -count N -concurrency 1,16 [-json] [-series DIR]
//	csibench node-up   -socket S -kubelet-dir K -name V -size BYTES   (prints JSON: ids and paths)
//	csibench node-down -socket S -volume-id ID -staging P -target T
//
// It is built by scripts/bench/build-go.sh in a temporary GOPATH against Debian's grpc-go; no
// binary is committed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: csibench clones|node-up|node-down [flags]")
		os.Exit(2)
	}
	command, arguments := os.Args[1], os.Args[2:]
	var err error
	switch command {
	case "clones":
		err = runClones(arguments)
	case "node-up":
		err = runNodeUp(arguments)
	case "node-down":
		err = runNodeDown(arguments)
	default:
		err = fmt.Errorf("unknown command %q", command)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "csibench:", err)
		os.Exit(1)
	}
}

// dial opens the one connection every call shares, as a csi-lib-utils sidecar does.
func dial(socket string) (*grpc.ClientConn, error) {
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return grpc.DialContext(ctx, "strata", grpc.WithInsecure(), grpc.WithBlock(), grpc.WithContextDialer(dialer))
}

func capability(block bool) *csi.VolumeCapability {
	access := &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}
	if block {
		return &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: access,
		}
	}
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: access,
	}
}

func callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 120*time.Second)
}

func printJSON(value interface{}) error {
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	return encoder.Encode(value)
}
