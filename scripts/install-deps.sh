#!/usr/bin/env bash
# Installs the system packages the project uses, from Debian. Used by the README's test
# command, CI (.ci/run) and the Dockerfile, so all three install the same things.
# Needs root; without it, prints what it would install and returns 0 (tests that need a
# missing tool skip themselves with a message).
set -euo pipefail
PACKAGES=(pkg-config iperf3 iproute2 ethtool libdpdk-dev dpdk dpdk-dev tcpdump) # dpdk-dev has dpdk-testpmd
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all system packages present (${PACKAGES[*]})"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; skipping install of: ${missing[*]} (tests needing them will say so and skip)"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
