//! Fuzz the wire parsers: `Packet::new_checked`, `AckRepr::parse` and `ProbeRepr::parse` must
//! never panic, and whatever they accept must re-emit to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstorm_dataplane::wire::{
    flags, AckRepr, Packet, PacketKind, ProbeRepr, RoundDoneRepr, ACK_PAYLOAD_LEN, HEADER_LEN,
    PROBE_MIN_LEN, ROUND_DONE_PAYLOAD_LEN,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::new_checked(data) {
        let header = packet.header();
        let mut out = [0u8; HEADER_LEN];
        header.emit(&mut out).expect("48-byte buffer");
        assert_eq!(&out[..], &data[..HEADER_LEN], "header does not round-trip");
        assert_eq!(header.buffer_len(), data.len());
        let payload_end = HEADER_LEN + usize::from(header.payload_len);
        assert_eq!(packet.payload(), &data[HEADER_LEN..payload_end]);
        assert_eq!(packet.authenticated_bytes(), &data[..payload_end]);
        assert_eq!(
            packet.auth_tag(),
            (header.flags & flags::AUTH != 0).then(|| &data[payload_end..])
        );
        match packet.kind() {
            PacketKind::Ack => {
                AckRepr::parse(packet.payload()).expect("checked Ack has an AckRepr");
            }
            PacketKind::Probe | PacketKind::ProbeReply => {
                ProbeRepr::parse(packet.payload()).expect("checked Probe has a ProbeRepr");
            }
            _ => {}
        }
    }
    if let Ok(ack) = AckRepr::parse(data) {
        let mut out = [0u8; ACK_PAYLOAD_LEN];
        ack.emit(&mut out).expect("24-byte buffer");
        assert_eq!(&out[..], &data[..ACK_PAYLOAD_LEN]);
    }
    if let Ok(probe) = ProbeRepr::parse(data) {
        let mut out = [0u8; PROBE_MIN_LEN];
        probe.emit(&mut out).expect("12-byte buffer");
        assert_eq!(&out[..], &data[..PROBE_MIN_LEN]);
    }
    if let Ok(done) = RoundDoneRepr::parse(data) {
        let mut out = [0u8; ROUND_DONE_PAYLOAD_LEN];
        done.emit(&mut out).expect("8-byte buffer");
        assert_eq!(&out[..], data);
    }
});
