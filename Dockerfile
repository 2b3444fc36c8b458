# NetStorm with the DPDK port, on Debian 12 (the distribution scripts/install-deps.sh targets).
# Build:  docker build -t netstorm .
# Run:    docker run --rm netstorm                 # `netstorm demo` (emulated WAN, virtual time)
#         docker run --rm netstorm netstorm --help
# DPDK on a real NIC needs hugepages and device access: see README.md, "Running on a gateway".
# Only the directories below are copied, so a local target/ never enters the image.
FROM rust:1-bookworm
WORKDIR /netstorm
# System packages (DPDK, testpmd, tcpdump, ...) through the same script CI and the README use.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY .cargo .cargo
COPY src src
COPY benches benches
COPY tests tests
COPY dataplane dataplane
COPY controlplane controlplane
COPY node node
COPY python python
COPY scenarios scenarios
COPY scripts scripts
# pkg-config finds libdpdk here, so the DPDK port is linked in (not the no-DPDK stubs).
# The CLI and the node binaries (netstorm up runs the netstorm-dp / netstorm-cp beside it).
RUN pkg-config --exists libdpdk \
 && cargo build --release -p netstorm -p netstorm-node --features dpdk \
 && cp target/release/netstorm target/release/netstorm-dp target/release/netstorm-cp \
       target/release/netstorm-trainer /usr/local/bin/ \
 && rm -rf target
CMD ["netstorm", "demo"]
