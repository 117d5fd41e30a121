#!/usr/bin/env bash
# Builds the QEMU guest the live-migration tests boot, into a cache outside git
# (default <repo>/.build-guest, or $STRATA_GUEST_DIR):
#   vmlinuz            the kernel of Debian's linux-image-cloud-amd64 (downloaded with apt-get
#                      download and unpacked with dpkg-deb -x: nothing is installed on the host),
#                      with its version (kernel-version) and its virtio modules (modules/)
#   initramfs.cpio.gz  busybox (static) + scripts/guest/init + the virtio modules of that kernel +
#                      disk-workload, compiled here from scripts/guest/disk-workload.c
# Idempotent: the kernel is fetched once; the initramfs is rebuilt only when its sources change.
# Needs busybox-static, cpio, gcc and libc6-dev (scripts/install-deps.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${STRATA_GUEST_DIR:-$repo/.build-guest}"
mkdir -p "$cache"

# The kernel: whatever version the metapackage depends on today, fetched once. Only vmlinuz,
# the virtio modules the init loads (virtio is modular in this kernel) and the version are kept.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk)
if [ ! -s "$cache/vmlinuz" ] || [ ! -s "$cache/kernel-version" ]; then
  resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
  package="$(resolve)"
  if [ -z "$package" ]; then
    # A fresh machine has no package lists yet.
    apt-get update -qq
    package="$(resolve)"
  fi
  [ -n "$package" ] || { echo "build-guest: cannot resolve linux-image-cloud-amd64's kernel package" >&2; exit 1; }
  echo "build-guest: fetching $package"
  rm -rf "$cache/deb" "$cache/unpacked" "$cache/modules" "$cache/vmlinuz" "$cache/kernel-version"
  mkdir -p "$cache/deb" "$cache/modules"
  # apt-get download writes into the current directory; as root it warns that the _apt sandbox
  # user cannot write there, which is harmless.
  (cd "$cache/deb" && apt-get download -q "$package" 2>&1 | grep -v "W: Download is performed unsandboxed" || true)
  deb="$(ls "$cache"/deb/*.deb 2>/dev/null | head -n 1)"
  [ -n "$deb" ] || { echo "build-guest: apt-get download $package produced no .deb" >&2; exit 1; }
  dpkg-deb -x "$deb" "$cache/unpacked"
  version="$(ls "$cache/unpacked/lib/modules" | head -n 1)"
  for module in "${modules[@]}"; do
    found="$(find "$cache/unpacked/lib/modules/$version" -name "$module.ko*" | head -n 1)"
    [ -n "$found" ] || continue # built in
    case "$found" in
      *.ko.xz) xz -dc "$found" >"$cache/modules/$module.ko" ;;
      *.ko.zst) zstd -qdc "$found" >"$cache/modules/$module.ko" ;;
      *) cp "$found" "$cache/modules/$module.ko" ;;
    esac
  done
  cp "$(ls "$cache"/unpacked/boot/vmlinuz-* | head -n 1)" "$cache/vmlinuz"
  echo "$version" >"$cache/kernel-version"
  rm -rf "$cache/deb" "$cache/unpacked"
fi
kernel_version="$(cat "$cache/kernel-version")"

# The initramfs, rebuilt when the init, the workload's source or the kernel changes.
stamp="$(cat "$here/init" "$here/disk-workload.c" "$here/build-guest.sh" | sha256sum | cut -c1-16)-$kernel_version"
if [ -s "$cache/initramfs.cpio.gz" ] && [ "$(cat "$cache/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "build-guest: up to date in $cache"
  exit 0
fi
# The initramfs has no libc: only a static busybox (Debian's busybox-static) works there.
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ! LC_ALL=C readelf -d "$busybox" 2>&1 | grep -q "no dynamic section"; then
  echo "build-guest: $busybox is missing or not static (apt-get install busybox-static)" >&2
  exit 1
fi
root="$cache/initramfs-root"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,modules}
cp "$busybox" "$root/bin/busybox"
cp "$here/init" "$root/init"
chmod 755 "$root/init"
gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/disk-workload" "$here/disk-workload.c"
cp "$cache"/modules/*.ko "$root/modules/" 2>/dev/null || true
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 >"$cache/initramfs.cpio.gz.new")
mv "$cache/initramfs.cpio.gz.new" "$cache/initramfs.cpio.gz"
echo "$stamp" >"$cache/initramfs.stamp"
rm -rf "$root"
echo "build-guest: built $cache/initramfs.cpio.gz (kernel $kernel_version)"
