"""Ownership handovers of a ReadWriteMany Block volume under I/O, for scripts/bench-handover.sh.

Usage:
  handover.py PROTO_DIR WORK ROUNDS SIZE FILL NS_A METRICS_A NS_B METRICS_B

Nodes a and b serve on WORK/{a,b}/csi.sock with kubelet directories WORK/{a,b}/kubelet; their
metrics are read from inside their network namespaces (NS_x, http://METRICS_x/metrics). Node a
creates an RWX Block volume of SIZE bytes and writes FILL bytes into it. Then, ROUNDS times, as a
live migration does: the node not holding the volume stages it (its I/O goes to the owner), the
writer moves there (O_DIRECT 4 KiB writes at random offsets in the filled part, one at a time),
and the owner unstages, so the volume's ownership moves to the writer's node. Per handover:

- the I/O pause as the writer saw it: the longest gap between two completed writes from the
  owner's unstage until the new owner reports the volume its own (plus 0.3 s);
- the pause the new owner measured (strata_handover_io_pause_seconds, the round's increase);
- the layer bytes the new owner received (strata_peer_bytes_received_total), against the bytes
  allocated in its store the moment it reports the volume its own (the volume's whole chain:
  nothing else is there; the old owner's figure before the unstage is printed too, but the
  writer adds to it until the freeze); and against FILL, the data the volume holds (the writer
  only rewrites the filled part), which says whether what moves is the data or its history.

Prints one line per handover, then p50, p99 and max, and the writer's I/O errors (must be 0).
"""
import json
import math
import mmap
import os
import random
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peerbench  # noqa: E402  (the CSI stubs and the stage/publish paths)

BLOCK = 4096


class Writer:
    """One O_DIRECT writer thread on one device; keeps the completion time of every write."""

    def __init__(self, device, span):
        self.device, self.span = device, span
        self.completions, self.errors = [], []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        fd = os.open(self.device, os.O_WRONLY | os.O_DIRECT)
        buffer = mmap.mmap(-1, BLOCK)
        rng = random.Random(fd)
        sequence = 0
        try:
            while not self.stopping.is_set():
                sequence += 1
                buffer[0:16] = sequence.to_bytes(8, "little") * 2
                try:
                    os.pwrite(fd, buffer, rng.randrange(self.span // BLOCK) * BLOCK)
                    self.completions.append(time.monotonic())
                except OSError as error:
                    self.errors.append(f"{error.strerror} at write {sequence}")
                    time.sleep(0.01)
        finally:
            os.close(fd)

    def stop(self):
        self.stopping.set()
        self.thread.join()


def longest_gap(completions, start, end):
    """The longest time between two completed writes inside [start, end] (edges included)."""
    times = [start] + [t for t in completions if start <= t <= end] + [end]
    return max(b - a for a, b in zip(times, times[1:]))


def metrics(namespace, address):
    text = subprocess.run(["nsenter", f"--net=/run/netns/{namespace}", "curl", "-sf", f"http://{address}/metrics"],
                          check=True, capture_output=True, text=True).stdout
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(strata_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if match and not match.group(2):
            values[match.group(1)] = float(match.group(3))
    return values


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]  # nearest rank


def main():
    proto_dir, work, rounds, size, fill = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    namespaces = {"a": sys.argv[6], "b": sys.argv[8]}
    addresses = {"a": sys.argv[7], "b": sys.argv[9]}
    pb, rpc = peerbench.load_stubs(proto_dir)
    import grpc
    channels = {node: grpc.insecure_channel(f"unix://{work}/{node}/csi.sock") for node in "ab"}
    kubelet = {node: f"{work}/{node}/kubelet" for node in "ab"}

    def retrying_aborted(what, call):
        """ABORTED while a handover holds the volume's lock (on either node): retry, as kubelet does."""
        for _ in range(600):
            try:
                return call()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ABORTED:
                    raise
                time.sleep(0.1)
        raise SystemExit(f"{what}: still ABORTED after 60 s")

    def attach(node, volume_id):
        staging, target = peerbench.paths(kubelet[node], volume_id)
        os.makedirs(staging, exist_ok=True)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        stub = rpc.NodeStub(channels[node])
        capability = peerbench.shared_block(pb)
        retrying_aborted(f"stage on {node}", lambda: stub.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, volume_capability=capability), timeout=120))
        retrying_aborted(f"publish on {node}", lambda: stub.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, target_path=target, volume_capability=capability), timeout=120))
        return target

    def detach(node, volume_id):
        staging, target = peerbench.paths(kubelet[node], volume_id)
        stub = rpc.NodeStub(channels[node])
        retrying_aborted(f"unpublish on {node}", lambda: stub.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target), timeout=120))
        retrying_aborted(f"unstage on {node}", lambda: stub.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging), timeout=120))

    def condition(node, volume_id):
        _, target = peerbench.paths(kubelet[node], volume_id)
        return rpc.NodeStub(channels[node]).NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=target), timeout=30).volume_condition.message

    volume = rpc.ControllerStub(channels["a"]).CreateVolume(pb.CreateVolumeRequest(
        name="bench-handover", capacity_range=pb.CapacityRange(required_bytes=size),
        volume_capabilities=[peerbench.shared_block(pb)]), timeout=60).volume.volume_id
    owner = "a"
    device = attach(owner, volume)
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
    chunk = mmap.mmap(-1, 1 << 20)
    for offset in range(0, fill, 1 << 20):
        chunk[:] = os.urandom(1 << 20)
        os.pwrite(fd, chunk, offset)
    os.fsync(fd)
    os.close(fd)
    writer = Writer(device, fill)
    results, errors = [], []
    print(f"{'#':>3} {'from':>4} {'to':>3} {'writer gap ms':>14} {'driver pause ms':>16} {'received MiB':>13} "
          f"{'allocated MiB':>14} {'ratio':>6} {'/ data':>7} {'before MiB':>11} {'handover s':>11}", flush=True)
    try:
        for number in range(1, rounds + 1):
            target = "b" if owner == "a" else "a"
            device = attach(target, volume)
            writer.stop()
            errors += writer.errors
            writer = Writer(device, fill)
            time.sleep(0.5)  # the writer runs on the target, through the owner
            before_new, before_old = metrics(namespaces[target], addresses[target]), metrics(namespaces[owner], addresses[owner])
            started = time.monotonic()
            detach(owner, volume)
            # Owned: the new owner's condition says the volume lives there (while its old owner
            # does not answer, the condition says that instead, and the wait goes on).
            while "lives here" not in condition(target, volume):
                if time.monotonic() - started > 120:
                    raise SystemExit(f"handover {number}: node {target} does not own the volume after 120 s: {condition(target, volume)}")
                time.sleep(0.02)
            owned = time.monotonic()
            after = metrics(namespaces[target], addresses[target])
            time.sleep(0.3)
            gap = longest_gap(writer.completions, started, owned + 0.3)
            pauses = after.get("strata_handover_io_pause_seconds_count", 0) - before_new.get("strata_handover_io_pause_seconds_count", 0)
            pause = after.get("strata_handover_io_pause_seconds_sum", 0) - before_new.get("strata_handover_io_pause_seconds_sum", 0)
            received = after.get("strata_peer_bytes_received_total", 0) - before_new.get("strata_peer_bytes_received_total", 0)
            allocated = after.get("strata_allocated_bytes", 0)
            allocated_before = before_old.get("strata_allocated_bytes", 0)
            results.append({"gap": gap, "pause": pause if pauses == 1 else float("nan"), "received": received,
                            "allocated": allocated, "allocated_before": allocated_before, "seconds": owned - started})
            print(f"{number:>3} {owner:>4} {target:>3} {gap * 1000:>14.1f} {pause * 1000:>16.1f} {received / 2**20:>13.1f} "
                  f"{allocated / 2**20:>14.1f} {received / allocated if allocated else 0:>6.3f} {received / fill:>7.2f} "
                  f"{allocated_before / 2**20:>11.1f} {owned - started:>11.2f}", flush=True)
            owner = target
    finally:
        writer.stop()
        errors += writer.errors
        detach(owner, volume)
        rpc.ControllerStub(channels[owner]).DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume), timeout=60)

    def summary(label, values, scale, unit, digits=1):
        values = [v for v in values if v == v]
        if not values:
            print(f"{label}: no samples")
            return
        print(f"{label}: p50 {percentile(values, 0.5) * scale:.{digits}f} {unit}, p99 {percentile(values, 0.99) * scale:.{digits}f} {unit}, "
              f"max {max(values) * scale:.{digits}f} {unit} ({len(values)} handovers)")

    print()
    summary("I/O pause seen by the writer (longest gap between completed writes)", [r["gap"] for r in results], 1000, "ms")
    summary("I/O pause measured by the driver (strata_handover_io_pause_seconds)", [r["pause"] for r in results], 1000, "ms")
    summary("layer bytes received by the new owner / allocated there once it owns the volume",
            [r["received"] / r["allocated"] for r in results if r["allocated"]], 1, "x", digits=3)
    summary(f"layer bytes received by the new owner / the {fill >> 20} MiB of data the volume holds",
            [r["received"] / fill for r in results], 1, "x", digits=2)
    summary("unstage to owned on the new node", [r["seconds"] for r in results], 1, "s")
    print(f"targets: writer pause p99 <= 1000 ms; bytes moved <= 1.1x allocated. writer I/O errors: {len(errors)}"
          + (f" (first: {errors[0]})" if errors else ""))
    print(json.dumps({"results": results, "errors": len(errors)}), file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
