//! A [`SendPath`] driven directly: acknowledgements and timers in, losses, counters and
//! rates out. No emulator, no engine.

use super::*;
use crate::wire::PacketKind;

const MS: Nanos = 1_000_000;
const US: Nanos = 1_000;

/// A path with no RTT seed and a 200 ms initial RTO (the timer tests' time scale).
fn path() -> SendPath {
    let mut cfg = EngineConfig::new(0, 2, 1024);
    cfg.initial_rto_ns = 200 * MS;
    SendPath::new(vec![0, 1], 64, 1e9, &cfg)
}

fn item(seg: u32) -> SendItem {
    SendItem::new(PacketKind::ReduceData, 0, seg, 64)
}

/// Queues `n` segments and sends all of them at `now`.
fn send(p: &mut SendPath, first_seg: u32, n: u32, now: Nanos) {
    for seg in first_seg..first_seg + n {
        p.queue.push(item(seg));
    }
    while let Some((seq, it, _)) = p.next_to_send() {
        p.on_sent(seq, it, now);
        p.on_frame_left(now, 1_500);
    }
}

/// An acknowledgement of everything below `cum` and of `sacked`, echoing `echo_ns`.
fn ack(cum: u64, sacked: &[u64], echo_ns: Nanos) -> AckRepr {
    let top = sacked.iter().map(|s| s + 1).max().unwrap_or(0).max(cum);
    let mut bits = 0u64;
    for s in sacked.iter().copied().chain(cum.saturating_sub(64)..cum) {
        if top - 1 - s < 64 {
            bits |= 1 << (top - 1 - s);
        }
    }
    AckRepr {
        cum_ack: cum as u32,
        top: top as u32,
        bits,
        echo_ts_ns: echo_ns,
        owd_ns: 0,
    }
}

fn lost(p: &SendPath) -> u64 {
    p.telemetry(0, 1).lost_packets
}

#[test]
fn dupack_threshold_declares_and_counts_a_loss() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 8, MS);
    // 1 and 2 acknowledged past the hole at 0: not yet lost.
    assert!(p.on_ack(2 * MS, &ack(0, &[1, 2], MS), &mut c));
    assert_eq!((c.loss_detected, lost(&p)), (0, 0));
    // A third: 0 is lost.
    assert!(p.on_ack(2 * MS, &ack(0, &[1, 2, 3], MS), &mut c));
    assert_eq!((c.loss_detected, lost(&p)), (1, 1));
    assert_eq!(p.next_to_send(), Some((0, item(0), true)));
    // The loss rate weighs the loss against the packet that ack newly acknowledged:
    // one of two lost, with weight 2/1024.
    assert_eq!(p.loss.rate, 2.0 / 1024.0 * 0.5);
}

#[test]
fn rto_declares_counts_and_feeds_the_loss_rate() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    // No RTT sample yet: the initial RTO (200 ms) after the oldest packet.
    assert_eq!(p.timer_deadline(500 * US), Some(201 * MS));
    p.on_timers(201 * MS - 1, 500 * US, &mut c);
    assert_eq!(c.rto_fired, 0, "not due yet");
    p.on_timers(201 * MS, 500 * US, &mut c);
    assert_eq!(c.rto_fired, 1);
    assert_eq!(c.tail_timer_fired, 0);
    assert_eq!(lost(&p), 4);
    assert_eq!(c.loss_detected, 4, "RTO losses count like any other");
    assert_eq!(p.loss.rate, 4.0 / 1024.0, "and feed the loss rate");
    assert_eq!(p.rate_bps(), 1e9 * 0.7, "a timeout is congestion");
    assert_eq!(p.pacer.rate_bps(), p.rate_bps(), "the pacer follows");
    let resent: Vec<u64> = std::iter::from_fn(|| p.next_to_send().map(|(s, _, _)| s)).collect();
    assert_eq!(resent, [0, 1, 2, 3]);
}

#[test]
fn rto_declares_only_what_left_a_timeout_ago() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 2, MS);
    send(&mut p, 2, 2, 150 * MS);
    p.on_timers(201 * MS, 500 * US, &mut c);
    assert_eq!((c.rto_fired, c.loss_detected), (1, 2));
}

#[test]
fn rto_backs_off_up_to_max_rto_and_an_rtt_sample_resets_it() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    let mut fired_at = Vec::new();
    for _ in 0..6 {
        let d = p.timer_deadline(500 * US).unwrap();
        p.on_timers(d, 500 * US, &mut c);
        fired_at.push(d);
    }
    let gaps: Vec<Nanos> = fired_at.windows(2).map(|w| (w[1] - w[0]) / MS).collect();
    // 200 ms doubled while the timeout stays within max_rto (2 s): 400, 800, 1600, then
    // 3200 would pass it, so 1600 again.
    assert_eq!(gaps, [400, 800, 1600, 1600, 1600]);
    assert_eq!(c.rto_fired, 6);
    assert_eq!(c.loss_detected, 4, "each packet is declared lost once");
    // A retransmission acknowledged with a fresh RTT sample ends the back-off.
    let now = fired_at[5] + MS;
    let (seq, it, rtx) = p.next_to_send().unwrap();
    assert!(rtx);
    p.on_sent(seq, it, now);
    assert!(p.on_ack(now + 20 * MS, &ack(1, &[], now), &mut c));
    // srtt 20 ms, rttvar 10 ms: RTO 60 ms from the oldest unacknowledged (sent at 1 ms)
    // or the last firing, whichever is later.
    assert_eq!(p.timer_deadline(500 * US), Some(fired_at[5] + 60 * MS));
}

#[test]
fn tail_timer_fires_before_the_rto_on_a_short_path() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    // 0 is acknowledged 10 us later: srtt 10 us, rttvar 5 us; the RTO is min_rto (5 ms).
    assert!(p.on_ack(MS + 10 * US, &ack(1, &[], MS), &mut c));
    // The tail timer: last send + max(2 srtt, srtt + 4 rttvar) + ack delay.
    let tail = MS + 30 * US + 500 * US;
    assert_eq!(p.timer_deadline(500 * US), Some(tail));
    p.on_timers(tail, 500 * US, &mut c);
    assert_eq!((c.tail_timer_fired, c.rto_fired), (1, 0));
    assert_eq!((c.loss_detected, lost(&p)), (3, 3));
    // 3 of 1024: below the 2 % tolerance, so no decrease.
    assert_eq!(p.rate_bps(), 1e9);
    // Once per tail: only the RTO is left until an acknowledgement re-arms it.
    assert_eq!(p.timer_deadline(500 * US), Some(MS + 5 * MS));
    let resent: Vec<u64> = std::iter::from_fn(|| {
        let (s, it, _) = p.next_to_send()?;
        p.on_sent(s, it, 2 * MS);
        p.on_frame_left(2 * MS, 1_500);
        Some(s)
    })
    .collect();
    assert_eq!(resent, [1, 2, 3]);
    assert!(p.on_ack(2 * MS + 10 * US, &ack(2, &[], 2 * MS), &mut c));
    let d = p.timer_deadline(500 * US).unwrap();
    assert!(d < MS + 5 * MS, "re-armed: the tail timer is back ({d})");
}

#[test]
fn tail_timer_waits_while_data_is_queued() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    assert!(p.on_ack(MS + 10 * US, &ack(1, &[], MS), &mut c));
    p.queue.push(item(10));
    assert_eq!(p.timer_deadline(500 * US), Some(6 * MS), "only the RTO");
}

#[test]
fn heavy_tail_loss_is_congestion() {
    let cfg = EngineConfig::new(0, 2, 1024);
    let mut p = SendPath::new(vec![0, 1], 64, 1e9, &cfg);
    let mut c = Counters::default();
    send(&mut p, 0, 40, MS);
    assert!(p.on_ack(MS + 10 * US, &ack(1, &[], MS), &mut c));
    let d = p.timer_deadline(500 * US).unwrap();
    p.on_timers(d, 500 * US, &mut c);
    // 39 of 1024 packets: 3.8 % > 2 %.
    assert_eq!(c.loss_detected, 39);
    assert_eq!(p.rate_bps(), 1e9 * 0.7);
}

#[test]
fn stale_acks_are_counted_and_ignored() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    assert!(p.on_ack(5 * MS, &ack(2, &[], 3 * MS), &mut c));
    let srtt = p.srtt_ns();
    // A replay of an older ack: nothing new, older echo.
    assert!(!p.on_ack(6 * MS, &ack(1, &[], MS), &mut c));
    assert_eq!(c.rx_stale_ack, 1);
    assert_eq!(p.srtt_ns(), srtt, "no bogus RTT sample");
}

#[test]
fn idle_and_work() {
    let mut p = path();
    assert!(p.idle() && !p.has_work());
    p.queue.push(item(0));
    assert!(!p.idle() && p.has_work());
    send(&mut p, 1, 0, MS);
    assert!(!p.idle() && !p.has_work(), "sent, unacknowledged");
    let mut c = Counters::default();
    assert!(p.on_ack(2 * MS, &ack(1, &[], MS), &mut c));
    assert!(p.idle());
}

#[test]
fn a_full_window_has_no_work_until_acknowledged() {
    let mut p = path();
    send(&mut p, 0, 64, MS);
    p.queue.push(item(64));
    assert!(!p.has_work(), "64 in flight fill the window");
    let mut c = Counters::default();
    assert!(p.on_ack(2 * MS, &ack(1, &[], MS), &mut c));
    assert!(p.has_work());
}

#[test]
fn sending_charges_the_path_pacer() {
    let mut p = path(); // 1 Gbit/s: 8 ns per byte
    send(&mut p, 0, 2, MS);
    assert_eq!(p.pacer.next_ns(), MS + 2 * 1_500 * 8);
}

#[test]
fn telemetry_reports_delivery_and_rtt() {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    assert!(p.on_ack(3 * MS, &ack(4, &[], MS), &mut c));
    let t = p.telemetry(7, 1_000);
    assert_eq!(t.path, 7);
    assert_eq!(t.hops, [0, 1]);
    assert_eq!(t.delivered_bytes, 4_000);
    assert_eq!((t.srtt_ns, t.min_rtt_ns), (Some(2 * MS), Some(2 * MS)));
    assert_eq!(t.pacing_bps, 1e9);
}

#[test]
fn expand_seq_picks_nearest() {
    assert_eq!(expand_seq(5, 3), 5);
    assert_eq!(expand_seq(u32::MAX, 1 << 32), (1 << 32) - 1);
    assert_eq!(expand_seq(2, (1 << 32) - 3), (1 << 32) + 2);
}

#[test]
fn a_route_s_initial_rtt_comes_from_the_topology_latencies() {
    let mut topo = Topology::full_mesh(3, 1e9, 50 * MS);
    // Asymmetric: 1 -> 2 is slower one way (acks come back on 2 -> 1).
    for l in &mut topo.links {
        if (l.from, l.to) == (2, 1) {
            l.latency_ns = 70 * MS;
        }
    }
    assert_eq!(
        initial_rtt_ns(&topo, &[0, 1], MS / 2),
        Some(100 * MS + MS / 2)
    );
    assert_eq!(
        initial_rtt_ns(&topo, &[0, 1, 2], 0),
        Some(50 * MS + 50 * MS + 50 * MS + 70 * MS),
        "out over both hops, back over both reverse links"
    );
    topo.links[0].latency_ns = 0;
    let (a, b) = (topo.links[0].from, topo.links[0].to);
    assert_eq!(initial_rtt_ns(&topo, &[a, b], MS), None, "unknown latency");
}

#[test]
fn installed_paths_start_with_an_rto_above_their_propagation_rtt() {
    let cfg = EngineConfig::new(0, 2, 4096);
    // 163 ms each way: aws10-latency's longest pair.
    let topo = Topology::pair(1e9, 163 * MS);
    let mut paths = Paths::default();
    paths
        .install(&Policy::pair(&topo, 1), 0, &cfg, &topo)
        .unwrap();
    let sp = paths.send.iter().flatten().next().unwrap();
    let rtt = 326 * MS + cfg.ack_delay_ns;
    assert_eq!(sp.rto_ns(), 3 * rtt);
    // Latency unknown: the configured initial RTO.
    let topo = Topology::pair(1e9, 0);
    let mut paths = Paths::default();
    paths
        .install(&Policy::pair(&topo, 1), 0, &cfg, &topo)
        .unwrap();
    let sp = paths.send.iter().flatten().next().unwrap();
    assert_eq!(sp.rto_ns(), cfg.initial_rto_ns);
}

/// Four packets leave at 1 ms with more queued (the sender is not dry); the first ack comes
/// back after 10 ms, the second after 40 ms (30 ms more than the minimum: a queue, if the
/// network caused it), read by a loop that is `behind` or not. Returns the path's rate after
/// the second ack, whether the rate window it closed was application-limited, and the
/// CPU-limited ack count.
fn rtt_growth_while_behind(behind: bool) -> (f64, bool, u64) {
    let mut p = path();
    let mut c = Counters::default();
    send(&mut p, 0, 4, MS);
    for seg in 10..20 {
        p.queue.push(item(seg));
    }
    assert!(p.on_ack(11 * MS, &ack(1, &[], MS), &mut c));
    p.set_loop_behind(behind);
    assert!(p.on_ack(41 * MS, &ack(2, &[], MS), &mut c));
    let sample = p
        .telemetry(0, 1)
        .rate_sample
        .expect("a 30 ms window closed");
    (p.rate_bps(), sample.app_limited, c.cpu_limited_acks)
}

#[test]
fn samples_taken_while_the_loop_was_behind_never_lower_the_rate() {
    // The network's queue: the controller backs off, the sample is a real one.
    let (rate, app_limited, cpu) = rtt_growth_while_behind(false);
    assert!(
        rate < 1e9 && !app_limited && cpu == 0,
        "{rate} {app_limited} {cpu}"
    );
    // The same RTTs read by a loop that was behind: no decrease, and the window only bounds
    // the path from below.
    let (rate, app_limited, cpu) = rtt_growth_while_behind(true);
    assert_eq!(rate, 1e9);
    assert!(app_limited);
    assert_eq!(cpu, 1);
}

#[test]
fn a_path_created_while_the_loop_is_behind_knows_it() {
    let cfg = EngineConfig::new(0, 2, 4096);
    let topo = Topology::pair(1e9, MS);
    let mut paths = Paths::default();
    paths.set_loop_behind(true);
    paths
        .install(&Policy::pair(&topo, 1), 0, &cfg, &topo)
        .unwrap();
    assert!(paths.send.iter().flatten().all(|sp| sp.loop_behind));
    paths.set_loop_behind(false);
    assert!(paths.send.iter().flatten().all(|sp| !sp.loop_behind));
}
