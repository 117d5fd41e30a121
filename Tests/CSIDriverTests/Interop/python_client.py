"""Calls a CSI driver through Python's grpcio, with stubs generated from proto/csi.proto now.

Usage: python_client.py PROTO_DIR SOCKET_PATH
Prints one JSON object describing what the driver answered.
"""
import atexit
import json
import os
import shutil
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc


def load_stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="strata-py-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}",
                          f"--python_out={out}", f"--grpc_python_out={out}", "csi.proto"])
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    sys.path.insert(0, out)
    import csi_pb2
    import csi_pb2_grpc
    return csi_pb2, csi_pb2_grpc


def main():
    proto_dir, socket_path = sys.argv[1], sys.argv[2]
    pb, rpc = load_stubs(proto_dir)
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        identity = rpc.IdentityStub(channel)
        info = identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=10)
        capabilities = identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=10)
        probe = identity.Probe(pb.ProbeRequest(), timeout=10)
        result = {
            "name": info.name,
            "vendor_version": info.vendor_version,
            "services": [pb.PluginCapability.Service.Type.Name(c.service.type)
                         for c in capabilities.capabilities if c.HasField("service")],
            "ready": probe.ready.value if probe.HasField("ready") else None,
        }
        # An error status must come back as a proper gRPC status, not a broken stream.
        try:
            rpc.ControllerStub(channel).DeleteVolume(pb.DeleteVolumeRequest(), timeout=10)
            result["delete_without_id"] = "OK"
        except grpc.RpcError as error:
            result["delete_without_id"] = error.code().name
    print(json.dumps(result))


if __name__ == "__main__":
    main()
