#!/usr/bin/env bash
# Installs every Debian package Kiln needs to build, test and benchmark (idempotent,
# non-interactive). Called by tools/test.sh and tools/quickstart.sh; safe to run by hand.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap g++ git
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libabsl-dev
  catch2 libdnnl-dev libgloo-dev liburing-dev libsqlite3-dev
  libyaml-cpp-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev
  python3-torch python3-numpy python3-grpcio python3-protobuf python3-yaml
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
