#!/usr/bin/env bash
# Installs what is missing, builds strata-csi (release) and runs it on an embedded default:
# state in ./strata-data, socket at ./strata-data/csi.sock. Extra arguments go to strata-csi
# (see `strata-csi --help`). The node service needs root for FUSE, loop devices and mounts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product strata-csi
exec "$(swift build -c release --show-bin-path)/strata-csi" "$@"
