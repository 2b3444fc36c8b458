//! Loom model check of the shared-memory ring algorithm (`netstorm_dataplane::shm`) over its
//! heap backing. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p netstorm-dataplane --release --test shm_loom
//! ```
//!
//! (Use a separate `CARGO_TARGET_DIR`, e.g. `target/loom`, to keep the normal build cache.)
//! Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use netstorm_dataplane::shm::{Consumer, HeapRing, Producer, PushError, RingGeometry};

/// Two slots, three messages: the producer must wait for the consumer to release a slot.
const GEOMETRY: RingGeometry = RingGeometry {
    slot_size: 16,
    slot_count: 2,
};
const MESSAGES: u8 = 3;

fn message(i: u8) -> Vec<u8> {
    vec![i + 1; 1 + i as usize]
}

fn push_spin(p: &mut Producer<HeapRing>, msg: &[u8]) {
    loop {
        match p.try_push(msg) {
            Ok(()) => return,
            Err(PushError::Full) => thread::yield_now(),
            Err(e) => panic!("push: {e}"),
        }
    }
}

fn pop_spin(c: &mut Consumer<HeapRing>) -> Vec<u8> {
    loop {
        match c.pop_with(|m| m.to_vec()) {
            Ok(Some(m)) => return m,
            Ok(None) => thread::yield_now(),
            Err(e) => panic!("pop: {e}"),
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    // Exhaustive (no preemption bound): with 2 slots and 3 messages this takes a few seconds.
    // Checked to fail when the producer's head store or the consumer's tail store is weakened
    // to `Relaxed` ("Causality violation: Concurrent read and write accesses to UnsafeCell").
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = None;
    builder.check(f);
}

#[test]
fn loom_spsc_two_slots_three_messages_in_order() {
    model(|| {
        let ring = HeapRing::new(GEOMETRY).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let mut c = Consumer::attach(ring).unwrap();
        let producer = thread::spawn(move || {
            for i in 0..MESSAGES {
                push_spin(&mut p, &message(i));
            }
        });
        for i in 0..MESSAGES {
            assert_eq!(pop_spin(&mut c), message(i));
        }
        producer.join().unwrap();
        assert_eq!(c.pop_with(|m| m.len()), Ok(None));
    });
}

#[test]
fn loom_producer_restart_hands_over_head() {
    model(|| {
        let ring = HeapRing::new(GEOMETRY).unwrap();
        let mut c = Consumer::attach(ring.clone()).unwrap();
        let ring_p = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            // First incarnation: one message, then "exits".
            let mut p = Producer::attach(ring_p.clone()).unwrap();
            push_spin(&mut p, &message(0));
            drop(p);
            // Second incarnation resumes at the published head.
            let mut p = Producer::attach(ring_p).unwrap();
            assert_eq!(p.next_seq(), 1);
            for i in 1..MESSAGES {
                push_spin(&mut p, &message(i));
            }
        });
        for i in 0..MESSAGES {
            assert_eq!(pop_spin(&mut c), message(i));
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_consumer_restart_resumes_at_tail() {
    model(|| {
        let ring = HeapRing::new(GEOMETRY).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let ring_c = Arc::clone(&ring);
        let consumer = thread::spawn(move || {
            let mut c = Consumer::attach(ring_c.clone()).unwrap();
            assert_eq!(pop_spin(&mut c), message(0));
            drop(c);
            let mut c = Consumer::attach(ring_c).unwrap();
            assert_eq!(c.next_seq(), 1);
            for i in 1..MESSAGES {
                assert_eq!(pop_spin(&mut c), message(i));
            }
        });
        for i in 0..MESSAGES {
            push_spin(&mut p, &message(i));
        }
        consumer.join().unwrap();
    });
}
