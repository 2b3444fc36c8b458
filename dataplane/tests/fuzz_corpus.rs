//! CI's stand-in for the data-plane fuzz targets: every committed corpus file of
//! `fuzz/corpus/{scenario_toml,shm_records,udp_frame}/` goes through the same checks as the
//! cargo-fuzz targets (`fuzz/checks_dataplane.rs`, shared), plus a bounded proptest run of
//! random and mutated inputs. Regenerate the generated seeds with
//! `cargo test -p netstorm-dataplane --test fuzz_corpus -- --ignored write_seed_corpus`.

#[path = "../../fuzz/checks_dataplane.rs"]
mod checks;

use netstorm_dataplane::shm_records::{PolicyRecord, TelemetryRecord};
use netstorm_dataplane::wire::frame::{emit_frame, FrameAddrs, FRAME_HEADER_LEN};
use netstorm_dataplane::wire::{emit_packet, ipv4_checksum, HeaderRepr, MacAddr, PacketKind};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fuzz corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8]) -> Result<bool, String>) -> (usize, usize) {
    let mut accepted = 0;
    let files = corpus(target);
    for (path, bytes) in &files {
        match check(bytes) {
            Ok(ok) => accepted += ok as usize,
            Err(e) => panic!("corpus file {}: {e}", path.display()),
        }
    }
    (files.len(), accepted)
}

#[test]
fn scenario_corpus_replays() {
    let (files, accepted) = replay("scenario_toml", checks::check_scenario);
    assert!(files >= 6, "{files} files");
    assert!(
        accepted >= 3,
        "the shipped scenarios must parse ({accepted})"
    );
    assert!(accepted < files, "the broken seeds must be rejected");
}

#[test]
fn shm_records_corpus_replays() {
    let (files, accepted) = replay("shm_records", checks::check_shm_records);
    assert!(files >= 3, "{files} files");
    assert_eq!(
        accepted, files,
        "every seed is a valid record or chunk sequence"
    );
}

#[test]
fn frame_corpus_replays() {
    let (files, accepted) = replay("udp_frame", checks::check_frame);
    assert!(files >= 7, "{files} files");
    assert_eq!(
        accepted, 3,
        "the valid frames parse, the broken ones do not"
    );
}

/// Mutations of the corpus files and random bytes: bounded fuzzing in the normal suite.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    let n = seeds.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (
            0..n,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        )
            .prop_map(move |(i, edits)| {
                let mut b = seeds[i].clone();
                for (at, byte) in edits {
                    if !b.is_empty() {
                        let at = at % b.len();
                        b[at] = byte;
                    }
                }
                b
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn scenario_parser_survives_mutations(data in mutated("scenario_toml")) {
        checks::check_scenario(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn shm_record_parsers_survive_mutations(data in mutated("shm_records")) {
        checks::check_shm_records(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn frame_parsers_survive_mutations(data in mutated("udp_frame")) {
        checks::check_frame(&data).map_err(TestCaseError::fail)?;
    }
}

/// Frames chunks as the `shm_records` target reads them: `u16` LE length + bytes.
fn framed(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn shm_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let t = TelemetryRecord {
        node: 3,
        path: 7,
        epoch: 2,
        round: 41,
        delivered_bytes: 1_234_567,
        interval_ns: 50_000_000,
        rtt_ns: 80_000_000,
        losses: 4,
        timestamp_ns: 9_000_000_000,
    };
    let policy = PolicyRecord {
        epoch: 5,
        activate_round: 12,
        policy: (0..300u32).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let small = PolicyRecord {
        epoch: 1,
        activate_round: 0,
        policy: b"{\"epoch\":1}".to_vec(),
    };
    vec![
        ("telemetry", t.to_bytes().to_vec()),
        ("policy_chunks_64", framed(&policy.chunks(64).unwrap())),
        ("policy_single_chunk", framed(&small.chunks(4096).unwrap())),
    ]
}

/// Frames as the DPDK port sends them (a NetStorm datagram inside), and broken ones.
fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let addrs = FrameAddrs {
        src_mac: MacAddr::local(1),
        dst_mac: MacAddr::local(2),
        src_ip: Ipv4Addr::new(10, 0, 0, 1),
        dst_ip: Ipv4Addr::new(10, 0, 0, 2),
        src_port: 4791,
        dst_port: 4791,
    };
    let header = HeaderRepr {
        kind: PacketKind::ReduceData,
        ttl: 4,
        job: 1,
        round: 3,
        seq: 17,
        segment: 5,
        ..HeaderRepr::default()
    };
    let payload: Vec<u8> = [1.0f32, -2.5]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let frame = |udp_csum: bool| {
        let mut f = vec![0u8; FRAME_HEADER_LEN + 256];
        let n = emit_packet(&header, &payload, &mut f[FRAME_HEADER_LEN..]).unwrap();
        f.truncate(FRAME_HEADER_LEN + n);
        emit_frame(&addrs, 7, n, udp_csum, &mut f);
        f
    };
    let refill_ip_checksum = |f: &mut Vec<u8>| {
        f[24..26].fill(0);
        let c = ipv4_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let mut small = vec![0u8; 60]; // a 4-byte datagram, padded to Ethernet's minimum
    small[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 4].copy_from_slice(b"ping");
    emit_frame(&addrs, 1, 4, true, &mut small);
    let mut fragment = frame(true);
    fragment[20] = 0x20; // more fragments
    refill_ip_checksum(&mut fragment);
    let mut bad_checksum = frame(true);
    bad_checksum[25] ^= 0x01;
    let mut ipv6 = frame(false);
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut options = frame(false);
    options[14] = 0x46;
    vec![
        ("netstorm_udp_checksum", frame(true)),
        ("netstorm_no_udp_checksum", frame(false)),
        ("padded_small", small),
        ("bad_fragment", fragment),
        ("bad_ip_checksum", bad_checksum),
        ("bad_ipv6_ethertype", ipv6),
        ("bad_ip_options", options),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus/{shm_records,udp_frame}; run explicitly to regenerate the seeds"]
fn write_seed_corpus() {
    for (target, seeds) in [("shm_records", shm_seeds()), ("udp_frame", frame_seeds())] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
        }
    }
}

#[test]
fn frame_seeds_are_what_they_say() {
    for (name, bytes) in frame_seeds() {
        let accepted = checks::check_frame(&bytes).unwrap();
        assert_eq!(accepted, !name.starts_with("bad_"), "{name}");
    }
}
