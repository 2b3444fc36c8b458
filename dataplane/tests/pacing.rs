//! The pacer's burst allowance (`EngineConfig::pacing_burst_ns`): on a fast link one poll
//! moves a batch of frames, at WAN rates still one frame at a time, and the long-run rate
//! stays the link's rate either way.

use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::probe::ProbeConfig;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::wire::{Packet, PacketKind};
use netstorm_dataplane::Nanos;

/// Node 0 (a child of root 1) with a round of 4096 segments to send and no probes.
fn sender(bps: f64, burst_ns: Nanos) -> Engine {
    let topo = Topology::pair(bps, 1_000);
    let mut cfg = EngineConfig::new(0, 2, 352 * 4096);
    cfg.pacing_burst_ns = burst_ns;
    cfg.probe = ProbeConfig {
        interval_ns: 0,
        ..ProbeConfig::default()
    };
    let mut e = Engine::new(cfg, &topo).unwrap();
    e.install_policy(Policy::pair(&topo, 1), 0).unwrap();
    e.start_round(1, 0).unwrap();
    e
}

/// Data frames `poll_transmit` hands out at time `now` until it has none.
fn drain(e: &mut Engine, now: Nanos, out: &mut [u8]) -> usize {
    let mut n = 0;
    while let Some(t) = e.poll_transmit(now, out) {
        let p = Packet::new_checked(&out[..t.len]).unwrap();
        assert_eq!(p.kind(), PacketKind::ReduceData);
        n += 1;
    }
    n
}

fn frame_ns(e: &Engine, bps: f64) -> f64 {
    e.config().frame_bytes() as f64 * 8.0 * 1e9 / bps
}

#[test]
fn a_fast_link_sends_a_batch_per_poll_a_wan_link_one_frame() {
    let mut out = vec![0u8; 2048];
    // 100 Gbit/s: a 1.5 kB frame takes ~120 ns, so 20 us of allowance is ~167 frames.
    let mut fast = sender(100e9, 20_000);
    let n = drain(&mut fast, 1, &mut out);
    let want = 20_000.0 / frame_ns(&fast, 100e9);
    assert!(
        (n as f64 - want).abs() <= 2.0,
        "{n} frames in one poll, expected about {want:.0}"
    );
    // Without the allowance: one frame per poll.
    let mut strict = sender(100e9, 0);
    assert_eq!(drain(&mut strict, 1, &mut out), 1);
    // 100 Mbit/s: a frame takes ~120 us, more than the allowance: one frame per poll.
    let mut wan = sender(100e6, 20_000);
    assert_eq!(drain(&mut wan, 1, &mut out), 1);
    assert_eq!(drain(&mut wan, 2_000, &mut out), 0);
}

#[test]
fn the_allowance_does_not_change_the_long_run_rate() {
    let mut out = vec![0u8; 2048];
    for bps in [10e9, 100e9] {
        let mut e = sender(bps, 20_000);
        let (mut now, mut sent) = (1, 0usize);
        // Poll every 5 us for 200 us of engine time.
        while now <= 200_000 {
            sent += drain(&mut e, now, &mut out);
            now += 5_000;
        }
        // Frames the link carries in 200 us, plus at most the 20 us allowance.
        let f = frame_ns(&e, bps);
        let most = (200_000.0 + 20_000.0) / f + 2.0;
        let least = 200_000.0 / f - 2.0;
        assert!(
            (sent as f64) <= most && (sent as f64) >= least,
            "{bps} bit/s: {sent} frames in 200 us, expected {least:.0}..={most:.0}"
        );
    }
}
