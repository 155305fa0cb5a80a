#!/usr/bin/env bash
# Installs what the build, tests and benchmarks need, skipping what is already there.
# Called by scripts/test.sh and scripts/bench.sh; safe to run repeatedly.
set -euo pipefail

want_apt=()
for pkg in cmake g++ make libgflags-dev libgtest-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || want_apt+=("$pkg")
done
# The benchmarks' ctest reads their JSON with python3 (any python3 on PATH will do).
command -v python3 >/dev/null 2>&1 || want_apt+=(python3)
if [ "${#want_apt[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${want_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want_apt[@]}" >/dev/null
fi

if [ "${1:-}" = "--rust-test-tools" ]; then
  # Miri (pure layers) needs nightly + miri + rust-src; the no_std check needs the bare-metal target.
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  rustup component list --toolchain nightly --installed | grep -q '^miri' \
    || rustup component add --toolchain nightly miri rust-src
  rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
    || rustup component add --toolchain nightly rust-src
  rustup target list --installed | grep -q '^x86_64-unknown-none$' \
    || rustup target add x86_64-unknown-none
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
fi
