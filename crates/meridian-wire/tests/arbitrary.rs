//! Peer bytes never panic the decoders: arbitrary input is either decoded, reported as
//! incomplete, or refused with an error.

use bytes::BytesMut;
use meridian_wire::backend::BackendMessage;
use meridian_wire::frontend::{self, FrontendMessage};
use meridian_wire::{Frame, frame, startup};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn frame_stream_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(f)) = frame::decode(&mut buf, max) {
            let _ = FrontendMessage::decode(f.clone());
            let _ = BackendMessage::decode(f);
        }
    }

    #[test]
    fn message_bodies_never_panic(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let f = Frame { tag, body: body.clone().into() };
        let _ = FrontendMessage::decode(f.clone());
        let _ = BackendMessage::decode(f);
        let _ = frontend::decode_sasl_initial_response(body.clone().into());
        let _ = frontend::decode_password(body.into());
    }

    #[test]
    fn startup_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = startup::decode(&mut buf);
    }

    /// Valid-looking headers with random bodies: the structured paths, not just length checks.
    #[test]
    fn well_framed_random_bodies_never_panic(
        tag in prop::sample::select(b"QPBDECSHXdcfFpRKSZENv123T".to_vec()),
        body in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..128),
    ) {
        let mut buf = BytesMut::new();
        frame::write(&mut buf, tag, |b| b.extend_from_slice(&body));
        let f = frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        let _ = FrontendMessage::decode(f.clone());
        let _ = BackendMessage::decode(f);
    }
}
