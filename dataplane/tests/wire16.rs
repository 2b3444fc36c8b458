//! 16-bit payloads through the real engine on the emulated WAN: every node ends bit-identical
//! and within the documented error bound of the exact sum; fp16 saturates (counted) instead
//! of overflowing; NaN/infinity inputs are reported and propagate as NaN/infinity; a packet
//! of another payload type is dropped and counted and changes nothing.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::kernel16::{reduction_error_bound, write_wire, F16_MAX};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::protect::{JobSecret, Protection, ProtectionMode};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::wire::{emit_packet, HeaderRepr, PacketKind, PayloadType};
use netstorm_dataplane::wire::{AUTH_TAG_LEN, HEADER_LEN};

fn secret_protection() -> Protection {
    let secret = JobSecret::new(b"job-secret-key!!job-secret-key!!").unwrap();
    Protection::with_secret(ProtectionMode::Encrypt, secret)
}
const N: usize = 4;
const ROUND_NS: u64 = 600_000_000_000;

/// Two trees over four nodes: a chain 3 → 2 → 1 → 0 (depth 3) and a star into node 1.
fn policy(topo: &Topology) -> Policy {
    let mut b = PolicyBuilder::new();
    let chain = [None, Some(0), Some(1), Some(2)];
    b.tree(0, 0.6, &chain, &chain, ForwardMode::Pipelined);
    let star = [Some(1), None, Some(1), Some(1)];
    b.tree(1, 0.4, &star, &star, ForwardMode::Pipelined);
    b.link_rates_from(topo);
    b.build(1, N as u16)
}

fn value(v: usize, i: usize) -> f32 {
    // Mixed signs and magnitudes; not representable in 16 bits, so every encode rounds.
    let h = (i as u32).wrapping_mul(2_654_435_761) ^ (v as u32).wrapping_mul(40_503);
    let m = 1.0 + (h % 100_000) as f32 / 77_777.0;
    let sign = if h & 0x10_0000 != 0 { -1.0 } else { 1.0 };
    sign * m * [0.001f32, 0.3, 7.0, 250.0][(h >> 25) as usize % 4]
}

fn sim(wire: PayloadType, elems: usize, fill: impl Fn(usize, usize) -> f32) -> Simulation {
    let topo = Topology::full_mesh(N, 1e8, 2_000_000);
    let policy = policy(&topo);
    let engines = (0..N)
        .map(|v| {
            let mut cfg = EngineConfig {
                protection: secret_protection(),
                ..EngineConfig::new(v as u16, N as u16, elems)
            };
            cfg.set_wire(wire);
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            for (i, x) in e.buffer_mut().iter_mut().enumerate() {
                *x = fill(v, i);
            }
            e
        })
        .collect();
    Simulation::new(&topo, engines, EmuConfig::default()).unwrap()
}

fn assert_bit_identical(sim: &Simulation) {
    let first = sim.engine(0).buffer();
    for v in 1..N as u16 {
        let other = sim.engine(v).buffer();
        let bad = first
            .iter()
            .zip(other)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(bad, None, "node {v} differs from node 0");
    }
}

#[test]
fn sixteen_bit_rounds_are_bit_identical_within_bound_and_half_the_bytes() {
    let elems = 30_000;
    let mut bytes = Vec::new();
    for wire in PayloadType::ALL {
        let mut s = sim(wire, elems, value);
        assert_eq!(
            s.engine(0).config().segment_elems,
            if wire.is_16bit() { 696 } else { 348 }
        );
        s.run_round_all(0, ROUND_NS).unwrap();
        assert_bit_identical(&s);
        let result = s.engine(2).buffer();
        for (i, &got) in result.iter().enumerate() {
            let xs: Vec<f64> = (0..N).map(|v| f64::from(value(v, i))).collect();
            let exact: f64 = xs.iter().sum();
            let abs: f64 = xs.iter().map(|x| x.abs()).sum();
            let err = (f64::from(got) - exact).abs();
            if wire.is_16bit() {
                // The chain is the deepest tree: 3 edges.
                let bound = reduction_error_bound(wire, 3, N, abs);
                assert!(
                    err <= bound,
                    "{wire} element {i}: {got} vs {exact}, bound {bound}"
                );
            } else {
                assert!(err <= abs * 1e-6, "f32 element {i}: {got} vs {exact}");
            }
        }
        let sent: u64 = (0..N as u16).map(|v| s.engine(v).counters().tx_bytes).sum();
        bytes.push(sent);
        for v in 0..N as u16 {
            let c = s.engine(v).counters();
            assert_eq!(
                (c.saturated, c.nonfinite_inputs, c.rx_wrong_payload),
                (0, 0, 0)
            );
        }
    }
    // Payload halves; headers, tags and acks do not.
    for b in &bytes[1..] {
        let ratio = *b as f64 / bytes[0] as f64;
        assert!(
            (0.5..0.56).contains(&ratio),
            "16-bit bytes / f32 bytes = {ratio}"
        );
    }
}

#[test]
fn fp16_saturates_and_nonfinite_inputs_are_reported_not_replaced() {
    let elems = 2_000;
    // Every node holds 40000 (sum 160000: past fp16's range) except node 1's elements 5 and
    // 6 (NaN, +inf) and element 7 on every node (a small value).
    let fill = |v: usize, i: usize| match (v, i) {
        (1, 5) => f32::NAN,
        (1, 6) => f32::INFINITY,
        (_, 7) => 0.25,
        _ => 40_000.0,
    };
    let mut s = sim(PayloadType::F16, elems, fill);
    s.run_round_all(0, ROUND_NS).unwrap();
    assert_bit_identical(&s);
    let r = s.engine(3).buffer();
    assert!(r[5].is_nan(), "NaN stays NaN");
    assert_eq!(r[6], f32::INFINITY, "infinity stays infinity");
    assert_eq!(r[7], 1.0);
    assert_eq!(r[0], F16_MAX, "saturated, not infinity");
    assert_eq!(s.engine(1).round_stats().nonfinite_inputs, 2);
    assert_eq!(s.engine(0).round_stats().nonfinite_inputs, 0);
    let saturated: u64 = (0..N as u16)
        .map(|v| s.engine(v).round_stats().saturated)
        .sum();
    // Partial sums of 80000+ (chain, from node 2 upward; star, at its root) saturate.
    assert!(
        saturated as usize >= elems - 3,
        "saturations counted: {saturated}"
    );
    assert_eq!(
        saturated,
        (0..N as u16)
            .map(|v| s.engine(v).counters().saturated)
            .sum::<u64>()
    );
}

/// An authentic reduce packet from node 1 to node 0 of tree 0, segment 0, of `wire` type
/// (sealed by node 1's engine: a misconfigured peer with the right secret).
fn foreign_packet(s: &mut Simulation, wire: PayloadType) -> Vec<u8> {
    let topo = Topology::full_mesh(N, 1e8, 2_000_000);
    let p = policy(&topo);
    let path = p.routes.iter().position(|r| r.hops == [1, 0]).unwrap() as u16;
    let elems = s.engine(0).config().segment_elems;
    let poison = vec![1.0e4f32; elems];
    let mut payload = vec![0u8; elems * wire.elem_bytes()];
    write_wire(wire, &mut payload, &poison);
    let hdr = HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: ProtectionMode::Encrypt.flags(),
        job: 1,
        epoch: 1,
        path,
        src: 1,
        dst: 0,
        ttl: 1,
        timestamp_ns: 1,
        payload_type: wire,
        ..HeaderRepr::default()
    };
    let mut buf = vec![0u8; HEADER_LEN + payload.len() + AUTH_TAG_LEN];
    let n = emit_packet(&hdr, &payload, &mut buf).unwrap();
    assert_eq!(s.engine_mut(1).seal_as_self(&mut buf, n - AUTH_TAG_LEN), n);
    buf.truncate(n);
    buf
}

#[test]
fn a_packet_of_another_payload_type_is_dropped_and_counted() {
    let elems = 10_000;
    let reference = {
        let mut s = sim(PayloadType::Bf16, elems, value);
        s.run_round_all(0, ROUND_NS).unwrap();
        s.engine(0).buffer().to_vec()
    };
    let mut s = sim(PayloadType::Bf16, elems, value);
    for v in 0..N as u16 {
        s.schedule_start(v, 0, 0);
    }
    // Same job, same key, right length for f16 (the element size is the same): only the
    // payload type says it must not be added. Each sealed afresh (a new packet number: the
    // replay window would drop a repeated datagram before its type is looked at).
    let mut injected = 0;
    while s.summary(0).is_none() {
        s.step().unwrap();
        if injected < 200 {
            let now = s.now();
            let wire = if injected % 2 == 0 {
                PayloadType::F16
            } else {
                PayloadType::F32
            };
            let pkt = foreign_packet(&mut s, wire);
            s.engine_mut(0).handle_packet(now, &pkt);
            injected += 1;
        }
    }
    assert_eq!(injected, 200);
    assert_eq!(s.engine(0).counters().rx_wrong_payload, 200);
    assert_eq!(s.engine(0).counters().rx_bad_mac, 0, "authentic packets");
    assert_bit_identical(&s);
    let got = s.engine(0).buffer();
    assert!(
        got.iter()
            .zip(&reference)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "a foreign payload changed the result"
    );
}
