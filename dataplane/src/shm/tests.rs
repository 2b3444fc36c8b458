//! Unit tests of the rings: the algorithm over [`HeapRing`] (FIFO, limits, single
//! producer/consumer, re-attach, threads, corruption) and the ring file ([`ShmRegion`]).

use super::sync::Ordering;
use super::*;

#[cfg(miri)]
const MESSAGES: u64 = 40;
#[cfg(not(miri))]
const MESSAGES: u64 = 10_000;

fn geometry(slot_size: u32, slot_count: u32) -> RingGeometry {
    RingGeometry {
        slot_size,
        slot_count,
    }
}

fn message(seq: u64) -> Vec<u8> {
    let len = (seq % 13) as usize;
    let mut m = seq.to_le_bytes().to_vec();
    m.extend((0..len).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)));
    m
}

#[test]
fn shm_heap_fifo_full_and_empty() {
    let ring = HeapRing::new(geometry(32, 3)).unwrap();
    let mut p = Producer::attach(ring.clone()).unwrap();
    let mut c = Consumer::attach(ring.clone()).unwrap();
    let mut buf = [0u8; 28];
    assert_eq!(c.try_pop(&mut buf), Ok(None));
    for i in 0..3u8 {
        p.try_push(&[i; 5]).unwrap();
    }
    assert_eq!(p.try_push(b"x"), Err(PushError::Full));
    assert_eq!(c.pending(), Ok(3));
    assert_eq!(c.try_pop(&mut buf), Ok(Some(5)));
    assert_eq!(&buf[..5], &[0; 5]);
    p.try_push(b"x").unwrap();
    for expected in [&[1u8; 5][..], &[2; 5], b"x"] {
        let got = c.pop_with(|m| m.to_vec()).unwrap().unwrap();
        assert_eq!(got, expected);
    }
    assert_eq!(c.pop_with(|m| m.len()), Ok(None));
    assert_eq!((p.next_seq(), c.next_seq()), (4, 4));
}

#[test]
fn shm_heap_limits_and_small_buffer() {
    let ring = HeapRing::new(geometry(16, 2)).unwrap();
    let mut p = Producer::attach(ring.clone()).unwrap();
    let mut c = Consumer::attach(ring.clone()).unwrap();
    assert_eq!(p.max_payload(), 12);
    assert_eq!(
        p.try_push(&[0; 13]),
        Err(PushError::TooLarge { len: 13, max: 12 })
    );
    p.try_push(&[7; 12]).unwrap();
    p.try_push(&[]).unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        c.try_pop(&mut small),
        Err(PopError::BufferTooSmall {
            seq: 0,
            needed: 12,
            got: 4
        })
    );
    // Still there.
    let mut buf = [0u8; 12];
    assert_eq!(c.try_pop(&mut buf), Ok(Some(12)));
    assert_eq!(c.try_pop(&mut small), Ok(Some(0)));
    assert!(HeapRing::new(geometry(12, 2)).is_err());
    assert!(HeapRing::new(geometry(20, 2)).is_err());
    assert!(HeapRing::new(geometry(16, 0)).is_err());
}

#[test]
fn shm_heap_single_producer_single_consumer_enforced() {
    let ring = HeapRing::new(geometry(16, 2)).unwrap();
    let p = Producer::attach(ring.clone()).unwrap();
    let c = Consumer::attach(ring.clone()).unwrap();
    let taken = Producer::attach(ring.clone()).unwrap_err();
    assert_eq!(
        taken,
        RoleTaken {
            role: Role::Producer,
            holder_pid: None
        }
    );
    assert!(Consumer::attach(ring.clone()).is_err());
    drop((p, c));
    Producer::attach(ring.clone()).unwrap();
    Consumer::attach(ring).unwrap();
}

#[test]
fn shm_heap_reattach_both_sides_exactly_once_in_order() {
    let ring = HeapRing::new(geometry(32, 4)).unwrap();
    let mut p = Producer::attach(ring.clone()).unwrap();
    let mut c = Consumer::attach(ring.clone()).unwrap();
    let mut buf = [0u8; 28];
    let mut next_expected = 0;
    let mut seq = 0;
    while seq < MESSAGES {
        if seq % 7 == 3 {
            // Producer restart: resumes at the published head.
            drop(p);
            p = Producer::attach(ring.clone()).unwrap();
            assert_eq!(p.next_seq(), seq);
        }
        match p.try_push(&message(seq)) {
            Ok(()) => seq += 1,
            Err(PushError::Full) => {}
            Err(e) => panic!("{e}"),
        }
        if seq % 5 == 0 {
            drop(c);
            c = Consumer::attach(ring.clone()).unwrap();
            assert_eq!(c.next_seq(), next_expected);
        }
        if seq % 3 != 0 {
            while let Some(n) = c.try_pop(&mut buf).unwrap() {
                assert_eq!(&buf[..n], &message(next_expected)[..]);
                next_expected += 1;
            }
        }
    }
    while let Some(n) = c.try_pop(&mut buf).unwrap() {
        assert_eq!(&buf[..n], &message(next_expected)[..]);
        next_expected += 1;
    }
    assert_eq!(next_expected, MESSAGES);
}

#[test]
fn shm_heap_threads() {
    let ring = HeapRing::new(geometry(32, 4)).unwrap();
    let mut p = Producer::attach(ring.clone()).unwrap();
    let mut c = Consumer::attach(ring).unwrap();
    let producer = std::thread::spawn(move || {
        let mut seq = 0;
        while seq < MESSAGES {
            match p.try_push(&message(seq)) {
                Ok(()) => seq += 1,
                Err(PushError::Full) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    });
    let mut next = 0;
    while next < MESSAGES {
        match c.pop_with(|m| m.to_vec()).unwrap() {
            Some(m) => {
                assert_eq!(m, message(next));
                next += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    producer.join().unwrap();
}

#[test]
fn shm_heap_corruption_is_reported_not_panicking() {
    let ring = HeapRing::new(geometry(16, 2)).unwrap();
    let mut p = Producer::attach(ring.clone()).unwrap();
    let mut c = Consumer::attach(ring.clone()).unwrap();
    p.try_push(b"ok").unwrap();
    p.try_push(b"bad").unwrap();
    // A protocol-breaking writer scribbles a huge length into slot 1.
    // SAFETY: single-threaded test; nobody else touches slot 1 right now.
    unsafe { ring.with_slot_mut(1, |s| s[..4].copy_from_slice(&u32::MAX.to_ne_bytes())) };
    let mut buf = [0u8; 12];
    assert_eq!(c.try_pop(&mut buf), Ok(Some(2)));
    assert_eq!(
        c.try_pop(&mut buf),
        Err(PopError::CorruptSlot {
            seq: 1,
            len: u32::MAX,
            max: 12
        })
    );
    assert_eq!(c.try_pop(&mut buf), Ok(None), "corrupt slot skipped");
    // Counters out of range.
    ring.head().store(100, Ordering::Release);
    assert!(matches!(
        c.try_pop(&mut buf),
        Err(PopError::Corrupt {
            head: 100,
            tail: 2,
            ..
        })
    ));
    ring.tail().store(200, Ordering::Release);
    assert_eq!(
        p.try_push(b"a"),
        Err(PushError::Corrupt {
            head: 2,
            tail: 200,
            slot_count: 2
        })
    );
}

/// mmap tests: real files (flock and mmap are not available under Miri).
#[cfg(not(miri))]
mod file {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    pub(super) struct TempRingFile(pub PathBuf);
    impl TempRingFile {
        pub fn new(tag: &str) -> Self {
            let dir = if std::path::Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            Self(dir.join(format!(
                "netstorm-unit-{tag}-{}-{nanos}",
                std::process::id()
            )))
        }
    }
    impl Drop for TempRingFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn small() -> RingConfig {
        RingConfig {
            policy: geometry(64, 4),
            telemetry: geometry(16, 8),
        }
    }

    #[test]
    fn shm_file_roundtrip_and_layout() {
        let f = TempRingFile::new("roundtrip");
        let dp = ShmRegion::create(&f.0, small()).unwrap();
        let cp = ShmRegion::attach(&f.0, small()).unwrap();
        assert_eq!(dp.generation(), 1);
        assert_eq!(std::fs::metadata(&f.0).unwrap().len(), small().total_size());
        assert_eq!(small().telemetry_offset(), 128 + 256 + 256);
        let mut policy_tx = cp.policy_producer().unwrap();
        let mut policy_rx = dp.policy_consumer().unwrap();
        let mut tele_tx = dp.telemetry_producer().unwrap();
        let mut tele_rx = cp.telemetry_consumer().unwrap();
        policy_tx.try_push(b"policy-1").unwrap();
        tele_tx.try_push(b"t1").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(policy_rx.try_pop(&mut buf), Ok(Some(8)));
        assert_eq!(&buf[..8], b"policy-1");
        assert_eq!(tele_rx.try_pop(&mut buf), Ok(Some(2)));
        assert_eq!(&buf[..2], b"t1");
        assert_eq!(tele_rx.try_pop(&mut buf), Ok(None));
        // Roles are exclusive across mappings within this process too.
        let err = dp.policy_producer().unwrap_err();
        assert!(
            err.to_string()
                .contains("policy ring: ring producer already attached by pid"),
            "{err}"
        );
    }

    #[test]
    fn shm_file_producer_reattach_new_mapping_exactly_once() {
        let f = TempRingFile::new("reattach");
        let dp = ShmRegion::create(&f.0, small()).unwrap();
        let mut rx = dp.policy_consumer().unwrap();
        let mut buf = [0u8; 64];
        let mut next = 0u64;
        let mut seq = 0u64;
        for incarnation in 0..4 {
            // A "new process": a new mapping of the same file.
            let cp = ShmRegion::attach(&f.0, small()).unwrap();
            let mut tx = cp.policy_producer().unwrap();
            assert_eq!(
                tx.next_seq(),
                seq,
                "incarnation {incarnation} resumes at the head"
            );
            for _ in 0..3 {
                tx.try_push(&message(seq)).unwrap();
                seq += 1;
            }
            // Consume only some, leave the rest pending across the restart.
            while rx.pending().unwrap() > 1 {
                let n = rx.try_pop(&mut buf).unwrap().unwrap();
                assert_eq!(&buf[..n], &message(next)[..]);
                next += 1;
            }
            drop(tx);
            drop(cp);
        }
        while let Some(n) = rx.try_pop(&mut buf).unwrap() {
            assert_eq!(&buf[..n], &message(next)[..]);
            next += 1;
        }
        assert_eq!(next, seq);
        // And the consumer side re-attaching through a fresh create (data-plane restart
        // while nobody else has it mapped re-initialises: generation 2, empty rings).
        drop(rx);
        drop(dp);
        let dp = ShmRegion::create(&f.0, small()).unwrap();
        assert_eq!(dp.generation(), 2);
        assert_eq!(dp.policy_consumer().unwrap().pending(), Ok(0));
    }

    #[test]
    fn shm_file_create_while_mapped_keeps_pending_messages() {
        let f = TempRingFile::new("dp-restart");
        let dp = ShmRegion::create(&f.0, small()).unwrap();
        let cp = ShmRegion::attach(&f.0, small()).unwrap();
        let mut tx = cp.policy_producer().unwrap();
        tx.try_push(b"before").unwrap();
        drop(dp); // the data plane restarts; the control plane keeps the file mapped
        let dp = ShmRegion::create(&f.0, small()).unwrap();
        assert_eq!(dp.generation(), 1, "not re-initialised while mapped");
        let mut rx = dp.policy_consumer().unwrap();
        assert_eq!(rx.pop_with(|m| m.to_vec()), Ok(Some(b"before".to_vec())));
        // A mismatching create is refused while the file is mapped.
        let other = RingConfig {
            policy: geometry(128, 4),
            ..small()
        };
        let err = ShmRegion::create(&f.0, other).unwrap_err();
        assert!(
            matches!(
                err,
                ShmError::InUseMismatch {
                    field: "policy slot size",
                    ..
                }
            ),
            "{err}"
        );
        drop((tx, rx, cp, dp));
        // Nobody has it mapped: re-initialised with the new geometry.
        let dp = ShmRegion::create(&f.0, other).unwrap();
        assert_eq!(dp.generation(), 2);
        assert_eq!(dp.config(), other);
    }

    fn attach_err(f: &TempRingFile, expected: RingConfig) -> String {
        ShmRegion::attach(&f.0, expected).unwrap_err().to_string()
    }

    #[test]
    fn shm_file_attach_refuses_mismatches_naming_the_field() {
        let f = TempRingFile::new("mismatch");
        let p = f.0.display().to_string();
        drop(ShmRegion::create(&f.0, small()).unwrap());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&f.0)
            .unwrap();

        // Wrong slot size / count (the expectation differs from the file).
        let wrong_slot = RingConfig {
            telemetry: geometry(32, 8),
            ..small()
        };
        assert_eq!(
            attach_err(&f, wrong_slot),
            format!("ring file {p}: telemetry slot size 16, expected 32")
        );
        let wrong_count = RingConfig {
            policy: geometry(64, 8),
            ..small()
        };
        assert_eq!(
            attach_err(&f, wrong_count),
            format!("ring file {p}: policy slot count 4, expected 8")
        );

        // Wrong layout version.
        file.write_all_at(&3u32.to_ne_bytes(), 8).unwrap();
        assert_eq!(
            attach_err(&f, small()),
            format!("ring file {p}: layout version 3, expected 1")
        );
        file.write_all_at(&LAYOUT_VERSION.to_ne_bytes(), 8).unwrap();

        // Wrong total size in the header.
        let total = small().total_size();
        file.write_all_at(&(total + 128).to_ne_bytes(), 16).unwrap();
        assert_eq!(
            attach_err(&f, small()),
            format!(
                "ring file {p}: total size {}, expected {total}",
                total + 128
            )
        );
        file.write_all_at(&total.to_ne_bytes(), 16).unwrap();
        ShmRegion::attach(&f.0, small()).unwrap();

        // File longer than its header says.
        file.set_len(total + 4096).unwrap();
        assert_eq!(
            attach_err(&f, small()),
            format!(
                "ring file {p}: file length {}, expected {total}",
                total + 4096
            )
        );

        // Truncated rings, truncated header.
        file.set_len(total - 100).unwrap();
        let err = attach_err(&f, small());
        assert!(
            err.starts_with(&format!("ring file {p}: truncated: {} bytes", total - 100)),
            "{err}"
        );
        file.set_len(60).unwrap();
        let err = attach_err(&f, small());
        assert_eq!(
            err,
            format!("ring file {p}: truncated: 60 bytes, the header needs 128")
        );

        // Not initialised (creator died before writing the state word).
        file.set_len(0).unwrap();
        file.set_len(total).unwrap();
        file.write_all_at(&MAGIC, 0).unwrap();
        file.write_all_at(&LAYOUT_VERSION.to_ne_bytes(), 8).unwrap();
        file.write_all_at(&(HEADER_SIZE as u32).to_ne_bytes(), 12)
            .unwrap();
        let err = attach_err(&f, small());
        assert!(err.contains("not initialised"), "{err}");

        // Not a ring file at all.
        file.write_all_at(b"[scenario]\nname = 1\n", 0).unwrap();
        let err = attach_err(&f, small());
        assert!(
            err.starts_with(&format!("ring file {p}: not a NetStorm ring file")),
            "{err}"
        );

        // Missing file.
        drop(file);
        drop(f);
        let missing = TempRingFile::new("missing");
        let err = attach_err(&missing, small());
        assert!(
            err.starts_with(&format!("ring file {}: open:", missing.0.display())),
            "{err}"
        );

        // Bad configuration.
        let bad = RingConfig {
            policy: geometry(17, 4),
            ..small()
        };
        let err = ShmRegion::create(&missing.0, bad).unwrap_err().to_string();
        assert!(err.contains("policy ring: slot_size 17"), "{err}");
    }

    #[test]
    fn shm_file_create_reinitialises_garbage() {
        let f = TempRingFile::new("garbage");
        std::fs::write(&f.0, b"definitely not a ring file").unwrap();
        let dp = ShmRegion::create(&f.0, small()).unwrap();
        assert_eq!(dp.generation(), 1);
        let cp = ShmRegion::attach(&f.0, small()).unwrap();
        let mut tx = cp.telemetry_consumer().unwrap();
        assert_eq!(tx.pending(), Ok(0));
    }

    #[test]
    fn shm_config_toml_defaults_and_unknown_keys() {
        let c: RingConfig =
            toml::from_str("[policy]\nslot_size = 8192\nslot_count = 16\n").unwrap();
        assert_eq!(c.policy, geometry(8192, 16));
        assert_eq!(c.telemetry, RingConfig::default().telemetry);
        c.validate().unwrap();
        let err =
            toml::from_str::<RingConfig>("[policy]\nslot_size = 64\nslots = 2\n").unwrap_err();
        assert!(err.to_string().contains("slots"), "{err}");
        RingConfig::default().validate().unwrap();
        assert!(
            RingConfig::default().telemetry.max_payload()
                >= crate::shm_records::TelemetryRecord::LEN
        );
    }
}
