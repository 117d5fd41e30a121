"""Drives two strata-csi nodes for scripts/bench-peer.sh (stubs generated from proto/csi.proto now).

Usage:
  peerbench.py golden PROTO_DIR SOCKET KUBELET SIZE ALLOCATED DATA_FILE
      Creates a block volume of SIZE bytes, stages and publishes it, writes ALLOCATED bytes in 2 MiB
      extents spread over it (the same bytes are also written to DATA_FILE, contiguously, for the
      plain TCP copy), unpublishes, unstages and snapshots it. Prints {"snapshot": id}.
  peerbench.py clone PROTO_DIR SOCKET NAME SIZE SNAPSHOT
      Times CreateVolume from SNAPSHOT. Prints {"seconds": s, "volume": id}.
  peerbench.py rwx PROTO_DIR SOCKET NAME SIZE
      Creates a ReadWriteMany Block volume. Prints {"volume": id}.
  peerbench.py attach PROTO_DIR SOCKET KUBELET VOLUME
      Stages and publishes VOLUME as ReadWriteMany Block (on a node that does not hold it, its
      I/O goes to the node that does). Prints {"device": path}.
  peerbench.py detach PROTO_DIR SOCKET KUBELET VOLUME
      Unpublishes and unstages what attach did.
"""
import atexit
import json
import os
import shutil
import sys
import tempfile
import time

import grpc
import grpc_tools
from grpc_tools import protoc

EXTENT = 2 << 20


def load_stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="strata-peerbench-")
    atexit.register(shutil.rmtree, out, True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    if protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", "csi.proto"]) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    import csi_pb2
    import csi_pb2_grpc
    return csi_pb2, csi_pb2_grpc


def block(pb):
    return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(),
                               access_mode=pb.VolumeCapability.AccessMode(mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


def shared_block(pb):
    return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(),
                               access_mode=pb.VolumeCapability.AccessMode(mode=pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))


def paths(kubelet, volume_id):
    staging = f"{kubelet}/plugins/kubernetes.io/csi/strata.csi.dev/{volume_id}/globalmount"
    target = f"{kubelet}/pods/bench/volumes/kubernetes.io~csi/{volume_id}/dev"
    return staging, target


def rwx(pb, rpc, channel, name, size):
    volume = rpc.ControllerStub(channel).CreateVolume(pb.CreateVolumeRequest(
        name=name, capacity_range=pb.CapacityRange(required_bytes=size), volume_capabilities=[shared_block(pb)]), timeout=60).volume
    print(json.dumps({"volume": volume.volume_id}))


def attach(pb, rpc, channel, kubelet, volume_id):
    node = rpc.NodeStub(channel)
    staging, target = paths(kubelet, volume_id)
    os.makedirs(staging, exist_ok=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    node.NodeStageVolume(pb.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=staging,
                                                   volume_capability=shared_block(pb)), timeout=60)
    node.NodePublishVolume(pb.NodePublishVolumeRequest(volume_id=volume_id, staging_target_path=staging, target_path=target,
                                                       volume_capability=shared_block(pb)), timeout=60)
    print(json.dumps({"device": target}))


def detach(pb, rpc, channel, kubelet, volume_id):
    node = rpc.NodeStub(channel)
    staging, target = paths(kubelet, volume_id)
    node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target), timeout=60)
    node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging), timeout=60)


def golden(pb, rpc, channel, kubelet, size, allocated, data_file):
    controller, node = rpc.ControllerStub(channel), rpc.NodeStub(channel)
    volume = controller.CreateVolume(pb.CreateVolumeRequest(
        name="bench-golden", capacity_range=pb.CapacityRange(required_bytes=size), volume_capabilities=[block(pb)]), timeout=60).volume
    staging = f"{kubelet}/plugins/kubernetes.io/csi/strata.csi.dev/{volume.volume_id}/globalmount"
    target = f"{kubelet}/pods/bench/volumes/kubernetes.io~csi/{volume.volume_id}/dev"
    os.makedirs(staging, exist_ok=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    node.NodeStageVolume(pb.NodeStageVolumeRequest(volume_id=volume.volume_id, staging_target_path=staging, volume_capability=block(pb)), timeout=60)
    node.NodePublishVolume(pb.NodePublishVolumeRequest(volume_id=volume.volume_id, staging_target_path=staging, target_path=target,
                                                       volume_capability=block(pb)), timeout=60)
    extents = allocated // EXTENT
    stride = size // extents
    device = os.open(target, os.O_WRONLY)
    with open(data_file, "wb") as copy:
        for index in range(extents):
            data = os.urandom(EXTENT)
            os.pwrite(device, data, index * stride)
            copy.write(data)
    os.fsync(device)
    os.close(device)
    node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=target), timeout=60)
    node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=volume.volume_id, staging_target_path=staging), timeout=60)
    snapshot = controller.CreateSnapshot(pb.CreateSnapshotRequest(name="bench-snap", source_volume_id=volume.volume_id), timeout=60).snapshot
    print(json.dumps({"snapshot": snapshot.snapshot_id}))


def clone(pb, rpc, channel, name, size, snapshot):
    controller = rpc.ControllerStub(channel)
    request = pb.CreateVolumeRequest(
        name=name, capacity_range=pb.CapacityRange(required_bytes=size), volume_capabilities=[block(pb)],
        volume_content_source=pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snapshot)))
    started = time.monotonic()
    volume = controller.CreateVolume(request, timeout=3600).volume
    print(json.dumps({"seconds": time.monotonic() - started, "volume": volume.volume_id}))


def main():
    command, proto_dir, socket = sys.argv[1], sys.argv[2], sys.argv[3]
    pb, rpc = load_stubs(proto_dir)
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        if command == "golden":
            golden(pb, rpc, channel, sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
        elif command == "clone":
            clone(pb, rpc, channel, sys.argv[4], int(sys.argv[5]), sys.argv[6])
        elif command == "rwx":
            rwx(pb, rpc, channel, sys.argv[4], int(sys.argv[5]))
        elif command == "attach":
            attach(pb, rpc, channel, sys.argv[4], sys.argv[5])
        elif command == "detach":
            detach(pb, rpc, channel, sys.argv[4], sys.argv[5])
        else:
            raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
