//! The bench harnesses in process: short runs bounded by `max_rounds` (never by wall-clock
//! assertions), checked through their reports, and bad settings.

use super::udp::{run_udp, UdpBenchConfig};
use super::*;

/// The fields every backend reports, with sane values.
fn check_sane(r: &DataplaneReport, backend: Backend, children: usize, max_rounds: u64) {
    assert_eq!(r.backend, backend);
    assert_eq!(r.children, children);
    assert!(
        r.child_mpps > 0.0 && r.child_payload_gbps > 0.0 && r.seconds > 0.0,
        "{r:?}"
    );
    assert!(r.aggregator_rx_mpps >= r.child_mpps * 0.99, "{r:?}");
    assert!(r.rounds >= 1 && r.rounds <= max_rounds, "{r:?}");
    let l = &r.latency;
    assert!(
        l.p50_us > 0.0 && l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us,
        "{l:?}"
    );
    assert!(l.samples >= 1);
    assert!(r.verification.verified_rounds >= 1, "{:?}", r.verification);
    assert_eq!(r.verification.mismatches, 0, "{:?}", r.verification);
    assert!(r.cores.used >= 1 && r.cores.used <= r.cores.available.max(1));
}

#[test]
fn emu_runs_exactly_max_rounds_and_verifies_them() {
    let mut a = DataplaneBenchConfig::new(Backend::Emu);
    a.children = 3;
    a.segments_per_round = 32;
    a.seconds = 60.0;
    a.max_rounds = 40;
    a.verify_every = 4;
    let r = run_dataplane(&a).unwrap();
    check_sane(&r, Backend::Emu, 3, 40);
    assert_eq!(r.rounds, 40);
    assert_eq!(r.verification.verified_rounds, 10);
    let emu = r.emu.as_ref().expect("emu figures");
    assert!(emu.virtual_seconds > 0.0 && emu.events > 0);
    // 3 children on 100 Gbit/s links: at most 300 Gbit/s of payload reach the aggregator.
    assert!(emu.emulated_child_payload_gbps <= 300.0);
}

/// The aggregator is netstorm-dp's worker: its rounds come through its node file, its
/// result is checked there (so verified rounds count the aggregator's too), and its loop's
/// busy time never exceeds the measured interval.
#[test]
fn udp_engine_mode_runs_netstorm_dp_worker_as_the_aggregator() {
    let mut a = DataplaneBenchConfig::new(Backend::Udp);
    a.segment_bytes = 512;
    a.segments_per_round = 16;
    a.seconds = 60.0;
    a.max_rounds = 24;
    a.verify_every = 4;
    let r = run_dataplane(&a).unwrap();
    check_sane(&r, Backend::Udp, 2, 24);
    // --max-rounds bounds the run: 8 calibration rounds, then the other 16 measured.
    assert_eq!(r.rounds, 16);
    assert_eq!(r.child_segments, 16 * 16 * 2);
    // Rounds 8..24 every 4th (8, 12, 16, 20) and the last (23), at child 0, the root and
    // the aggregator's node file.
    assert_eq!(r.verification.verified_rounds, 3 * 5);
    assert_eq!(r.cores.threads[0].name, "aggregator");
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("netstorm-dp's worker loop")),
        "{:?}",
        r.notes
    );
    let busy = r.aggregator_busy_fraction.unwrap();
    assert!(busy > 0.0 && busy <= 1.0, "{r:?}");
    assert!(r.aggregator_capacity_gbps.unwrap() >= r.child_payload_gbps * 0.999);
    assert!(r.aggregator_batch.unwrap() >= 1.0);
}

#[test]
fn bad_settings_name_the_flag() {
    let err = |f: &dyn Fn(&mut DataplaneBenchConfig)| {
        let mut a = DataplaneBenchConfig::new(Backend::Emu);
        f(&mut a);
        match run_dataplane(&a) {
            Err(BenchError::Invalid(msg)) => msg,
            other => panic!("{a:?}: {other:?}"),
        }
    };
    assert!(err(&|a| a.children = 0).contains("--children 0"));
    assert!(err(&|a| a.segment_bytes = 1023).contains("--segment-bytes 1023"));
    assert!(err(&|a| a.seconds = 0.0).contains("--seconds 0"));
    assert!(err(&|a| a.batch = 0).contains("--batch 0"));
    assert!(err(&|a| {
        a.backend = Backend::Udp;
        a.mode = Mode::Raw
    })
    .contains("--mode raw needs --backend dpdk"));
    assert!(err(&|a| {
        a.backend = Backend::Dpdk;
        a.mode = Mode::Raw;
        a.protection = Some(netstorm_dataplane::protect::ProtectionMode::Off)
    })
    .contains("--protection and --no-mac apply to the engine mode"));
    #[cfg(not(feature = "dpdk"))]
    assert!(err(&|a| a.backend = Backend::Dpdk).contains("--features dpdk"));
}

#[test]
fn udp_port_vs_plain_socket() {
    let cfg = UdpBenchConfig {
        segment_bytes: 1024,
        seconds: 0.2,
        no_offload: false,
        batch: 64,
        idle_sleep_us: 0,
    };
    let r = run_udp(&cfg).unwrap();
    for run in [&r.port, &r.plain] {
        assert!(
            run.sent_datagrams > 0 && run.received_datagrams > 0,
            "{run:?}"
        );
        assert!(run.received_datagrams <= run.sent_datagrams, "{run:?}");
    }
    assert!(r.port.send_syscalls > 0 && r.port.recv_syscalls > 0);
    assert!(r.ratio_port_vs_plain > 0.0);
    let bad = UdpBenchConfig {
        segment_bytes: 0,
        ..cfg
    };
    assert!(
        matches!(run_udp(&bad), Err(BenchError::Invalid(m)) if m.contains("--segment-bytes 0"))
    );
}

/// Both modes on net_ring in this process's EAL (one test: the EAL and the ring names are
/// per process).
#[cfg(feature = "dpdk")]
#[test]
fn dpdk_engine_mode_runs_the_worker_in_place_and_raw_mode_verifies_every_segment() {
    let mut a = DataplaneBenchConfig::new(Backend::Dpdk);
    a.seconds = 60.0;
    a.max_rounds = 20;
    a.segments_per_round = 16;
    let eng = run_dataplane(&a).unwrap();
    check_sane(&eng, Backend::Dpdk, 2, 20);
    assert!(
        eng.notes
            .iter()
            .any(|n| n.contains("netstorm-dp's worker loop") && n.contains("in place")),
        "{:?}",
        eng.notes
    );
    assert!(eng.aggregator_capacity_gbps.unwrap() >= eng.child_payload_gbps * 0.999);
    a.mode = Mode::Raw;
    a.max_rounds = 50;
    a.segments_per_round = 64;
    let raw = run_dataplane(&a).unwrap();
    check_sane(&raw, Backend::Dpdk, 2, 50);
    assert_eq!(raw.verification.verified_rounds, 50 * 64);
}
