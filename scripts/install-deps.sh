#!/usr/bin/env bash
# Installs Zuma's build and test dependencies on Debian 12 (bookworm). Run as root.
# Idempotent: when every package is already installed it only checks, without apt.
set -euo pipefail

PACKAGES=(
  # build
  cmake ninja-build g++ pkg-config
  # libraries (DESIGN.md "Dependencies")
  libiscsi-dev libssl-dev libyaml-cpp-dev libspdlog-dev libfmt-dev doctest-dev
  liburing-dev libisal-dev libedit-dev libcli11-dev nlohmann-json3-dev libroaring-dev
  libxxhash-dev libcpp-httplib-dev
  # peers for tests and benchmarks
  libiscsi-bin tgt qemu-utils qemu-block-extra
  # the rbd backend (librbd) and the single-node Ceph cluster its tests start
  # (tests/integration/ceph-lib.sh): mon, osd, and the ceph/rbd command-line tools
  librbd-dev ceph-mon ceph-osd ceph-common
  # shared state of a cluster of zumad nodes (issue 9): etcd for the cluster tests
  etcd-server
  # libFuzzer targets (tests/fuzz/run.sh): clang with its sanitizer and fuzzer runtimes
  clang-16 libclang-rt-16-dev
  # used by the test scripts (timeout, stdbuf; Essential, listed for minimal images)
  coreutils
)

# One dpkg-query for all; a package counts only as "install ok installed" (not removed with
# its configuration left behind).
declare -A installed=()
while read -r name status; do
  [[ $status == "install ok installed" ]] && installed[${name%%:*}]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    exec sudo -E bash "$0" "$@"
  fi
  echo "install-deps: missing ${missing[*]}; run as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
apt_opts=(-y -q -o Dpkg::Use-Pty=0 --no-install-recommends)
# Update the package lists only if they are absent or if the install fails with them.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  apt-get update -q
fi
if ! apt-get install "${apt_opts[@]}" "${missing[@]}"; then
  apt-get update -q
  apt-get install "${apt_opts[@]}" "${missing[@]}"
fi
echo "install-deps: done"
