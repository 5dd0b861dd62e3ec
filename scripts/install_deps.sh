#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the demo need. Idempotent: when all packages
# are already present it only runs dpkg-query and returns in well under a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin                      # MPI ranks (Open MPI)
  libgrpc++-dev protobuf-compiler-grpc            # gRPC coordinator
  libprotobuf-dev protobuf-compiler               # StepPlan / API messages
  libyaml-cpp-dev                                 # deployment YAML
  libpcre2-dev                                    # tokenizer pre-tokenizer regexes (Unicode classes, lookahead)
  libcli11-dev                                    # command-line parsing of dsv4, dsv4-launch
  nlohmann-json3-dev                              # config.json, safetensors headers, index json
  libgtest-dev libgmock-dev                       # GoogleTest
  clang libclang-rt-14-dev                        # libFuzzer target for the safetensors header parser
  python3 python3-grpcio python3-protobuf python3-matplotlib python3-yaml  # example client, plots (system Python)
  curl ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
