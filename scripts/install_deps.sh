#!/usr/bin/env bash
# Installs the Debian 12 packages alphaspin builds against (idempotent: does
# nothing when they are all present).  Run as root or with sudo available.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config python3 python3-pip
      libpcre2-dev libcjson-dev libyaml-dev libcmocka-dev libssl-dev
      clang libclang-rt-14-dev
      libopenmpi-dev openmpi-bin)   # MPI: mpirun -np N alphaspin ... (src/dist); optional at build time
# Not installed here: the CUDA toolkit (nvcc, cuBLAS/cuBLASLt), optional; when CMake finds
# nvcc it builds the CUDA backend plugin, build/libalphaspin_cuda.so (README, "Dependencies").
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install_deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
