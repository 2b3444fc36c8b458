//! EAL failures are errors naming the arguments, never panics or hangs (feature `dpdk`; its
//! own test binary because the EAL can be initialized — or fail — only once per process).
#![cfg(feature = "dpdk")]

use netstorm_dataplane::port::dpdk::{eal_init, DpdkError, DpdkPort, DpdkPortConfig, EalConfig};
use std::net::Ipv4Addr;

#[test]
fn failed_eal_init_is_a_clear_error_and_stays_failed() {
    let mut e = EalConfig::virtual_devices(&["net_doesnotexist0"]);
    e.file_prefix = Some(format!("netstorm-eal-fail-{}", std::process::id()));
    let err = match eal_init(&e) {
        Err(DpdkError::NotLinked) => {
            eprintln!("skipping: netstorm-dpdk-sys was built without libdpdk");
            return;
        }
        Err(err) => err,
        Ok(()) => panic!("EAL accepted a vdev without a driver"),
    };
    let msg = err.to_string();
    assert!(matches!(err, DpdkError::EalInit { .. }), "{msg}");
    assert!(msg.contains("--vdev=net_doesnotexist0"), "{msg}");
    // The failure is remembered: the same call fails again, immediately.
    let again = eal_init(&e).unwrap_err();
    assert!(matches!(again, DpdkError::EalInit { .. }), "{again}");
    // Opening a port reports it too.
    let c = DpdkPortConfig::new("net_ring0", 0, Ipv4Addr::LOCALHOST, 4791);
    let open = DpdkPort::open(&e, &c).unwrap_err();
    assert!(matches!(open, DpdkError::EalInit { .. }), "{open}");
    // Bad arguments are caught before the EAL sees them.
    let mut bad = e.clone();
    bad.lcores = String::new();
    assert!(eal_init(&bad).unwrap_err().to_string().contains("lcores"));
}
