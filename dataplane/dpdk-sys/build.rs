//! Finds libdpdk with pkg-config and compiles `shim/shim.c` against it.
//!
//! Without libdpdk (or with `NETSTORM_DPDK_DISABLE=1`) nothing is compiled or linked and the
//! crate is built with `cfg(netstorm_dpdk_missing)`: every FFI function is then a stub that
//! reports `-ENOTSUP`, and [`LINKED`](crate::LINKED) is `false`. That keeps
//! `cargo build --workspace` (and `--features netstorm-dataplane/dpdk`) working on machines
//! without DPDK; the DPDK port then fails at run time with an error saying libdpdk is missing.

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=NETSTORM_DPDK_DISABLE");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rustc-check-cfg=cfg(netstorm_dpdk_missing)");
    if std::env::var("NETSTORM_DPDK_DISABLE").is_ok_and(|v| v == "1") {
        println!("cargo:warning=NETSTORM_DPDK_DISABLE=1: building netstorm-dpdk-sys without DPDK (stubs)");
        println!("cargo:rustc-cfg=netstorm_dpdk_missing");
        return;
    }
    let lib = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            // Only warn: a machine without DPDK still builds the workspace.
            let why: String = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let why: String = why.chars().take(200).collect();
            println!("cargo:warning=libdpdk not found by pkg-config; the DPDK port will report it at run time. Install libdpdk-dev (scripts/install-deps.sh). pkg-config said: {why}");
            println!("cargo:rustc-cfg=netstorm_dpdk_missing");
            return;
        }
    };
    let mut build = cc::Build::new();
    build.file("shim/shim.c").warnings(true).opt_level(2);
    for p in &lib.include_paths {
        build.include(p);
    }
    // pkg-config's cflags also carry `-include rte_config.h` and `-march=...`: DPDK's headers
    // need the former, and the inline functions must be compiled as DPDK expects.
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config ran a moment ago");
    let cflags = String::from_utf8_lossy(&cflags.stdout).to_string();
    let mut it = cflags.split_whitespace();
    while let Some(f) = it.next() {
        if f == "-include" {
            if let Some(h) = it.next() {
                build.flag("-include").flag(h);
            }
        } else if f.starts_with("-march") || f.starts_with("-m") && !f.starts_with("-mno") {
            build.flag(f);
        }
    }
    // The shim dlopen()s the net_ring PMD the EAL already loaded (see ns_eth_from_rings).
    println!("cargo:rustc-link-lib=dl");
    build.compile("netstorm_dpdk_shim");
}
