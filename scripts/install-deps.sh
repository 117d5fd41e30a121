#!/usr/bin/env bash
# Installs what Strata needs on a fresh Debian machine of this kind (idempotent, quick when done).
#   runtime: FUSE, loop/mount tools, mkfs for ext4 and xfs
#   tests:   protoc + Go and Python gRPC (interop tests), Prometheus's Go text parser (metrics
#            test), fio and bindfs (benchmarks),
#            kubernetes-validate (offline manifest validation), openssl and iproute2 (multi-node
#            tests: certificates, network namespaces), socat (peer benchmark)
#   guest:   QEMU (TCG), busybox-static, cpio, gcc/libc6-dev (static disk-workload) for the
#            live-migration harness; then scripts/guest/build-guest.sh caches its kernel and
#            initramfs in .build-guest/ (Debian's cloud kernel, fetched with apt-get download)
set -euo pipefail

apt_packages=(
  fuse3 libfuse3-dev pkg-config libsqlite3-dev e2fsprogs xfsprogs util-linux
  protobuf-compiler golang-go golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev golang-github-prometheus-common-dev protoc-gen-go
  protoc-gen-go-grpc fio bindfs socat openssl iproute2
)
# Without recommends: qemu-system-x86 would otherwise pull in a GUI stack the tests never use.
guest_apt_packages=(qemu-system-x86 busybox-static cpio gcc libc6-dev xz-utils)
pip_packages=(grpcio grpcio-tools kubernetes-validate==1.37.0)

missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

guest_missing=()
for package in "${guest_apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || guest_missing+=("$package")
done
if [ ${#guest_missing[@]} -gt 0 ]; then
  echo "installing Debian packages for the QEMU guest: ${guest_missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${guest_missing[@]}" >/dev/null
fi
"$(dirname "${BASH_SOURCE[0]}")/guest/build-guest.sh"

if ! python3 -c 'import grpc, grpc_tools, kubernetes_validate' 2>/dev/null; then
  echo "installing Python packages: ${pip_packages[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pip_packages[@]}"
fi

# Loop devices and FUSE are part of the node path; make sure the kernel side is there too.
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
