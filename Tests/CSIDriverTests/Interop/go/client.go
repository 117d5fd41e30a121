// Command client calls a CSI driver the way kubelet and the CSI sidecars do (grpc-go over a Unix
// socket, one long-lived connection, a custom dialer that counts dials as csi-lib-utils does) and
// prints a JSON summary. A reconnect would make a csi-lib-utils sidecar exit, so `dials` must be 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

type summary struct {
	Calls        int     `json:"calls"`
	Errors       int     `json:"errors"`
	FirstError   string  `json:"first_error"`
	Dials        int32   `json:"dials"`
	StateChanges []string `json:"state_changes"`
	Seconds      float64 `json:"seconds"`
}

func main() {
	socket := flag.String("socket", "", "driver socket path")
	calls := flag.Int("calls", 2000, "number of unary calls")
	flag.Parse()

	var dials int32
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		atomic.AddInt32(&dials, 1)
		var d net.Dialer
		return d.DialContext(ctx, "unix", *socket)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "strata", grpc.WithInsecure(), grpc.WithBlock(), grpc.WithContextDialer(dialer))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	defer conn.Close()

	states := make(chan string, 1024)
	go func() {
		state := conn.GetState()
		for conn.WaitForStateChange(context.Background(), state) {
			state = conn.GetState()
			states <- state.String()
			if state == connectivity.Shutdown {
				return
			}
		}
	}()

	identity := csi.NewIdentityClient(conn)
	result := summary{Calls: *calls}
	start := time.Now()
	for i := 0; i < *calls; i++ {
		callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		switch i % 3 {
		case 0:
			_, err = identity.GetPluginInfo(callCtx, &csi.GetPluginInfoRequest{})
		case 1:
			_, err = identity.Probe(callCtx, &csi.ProbeRequest{})
		default:
			_, err = identity.GetPluginCapabilities(callCtx, &csi.GetPluginCapabilitiesRequest{})
		}
		callCancel()
		if err != nil {
			if result.Errors == 0 {
				result.FirstError = err.Error()
			}
			result.Errors++
		}
	}
	result.Seconds = time.Since(start).Seconds()
	result.Dials = atomic.LoadInt32(&dials)
	for drained := false; !drained; {
		select {
		case s := <-states:
			result.StateChanges = append(result.StateChanges, s)
		default:
			drained = true
		}
	}
	json.NewEncoder(os.Stdout).Encode(result)
}
