//! The payload codec. Input: one mode byte, then data.
//!
//! - Mode even: the data is a stored payload of unknown provenance, decoded with every codec
//!   (identity, plain brotli, dictionary v1, dictionary v2) and through the stored codec byte
//!   (`Codec::from_id`, unknown ids included). Decoding never panics, and never returns more than
//!   `codec::MAX_DECODED` bytes (the decompression-bomb cap).
//! - Mode odd: the data is a raw payload, encoded with the codec, quality (0-11, the persister's
//!   configurable range; 10 and 11 only up to 1 KiB) and threshold the next three bytes pick.
//!   Encoding is deterministic, never grows the payload, and decoding gives back exactly the
//!   bytes that went in.
#![no_main]

use libfuzzer_sys::fuzz_target;

use formbridge_shared::codec::{self, Codec, CodecError, PayloadCodec, DEFAULT_LGWIN, MAX_DECODED};

const ALL: [Codec; 4] = [Codec::Identity, Codec::Brotli, Codec::BrotliDictV1, Codec::BrotliDictV2];

fn decode_capped(c: Codec, bytes: &[u8]) {
    match codec::decode(c, bytes) {
        Ok(out) => assert!(out.len() <= MAX_DECODED, "{c:?} decoded {} bytes, over the cap", out.len()),
        Err(CodecError::TooLarge | CodecError::Corrupt(_)) => {}
        Err(e @ CodecError::UnknownCodec(_)) => panic!("a known codec is unknown: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        for c in ALL {
            decode_capped(c, rest);
        }
        // As stored in an item of layout 2: the codec byte, then the bytes.
        if let Some((&id, bytes)) = rest.split_first() {
            match Codec::from_id(id) {
                Ok(c) => decode_capped(c, bytes),
                Err(e) => assert!(id > 3 && matches!(e, CodecError::UnknownCodec(_))),
            }
        }
        return;
    }
    let [pick, quality, threshold, raw @ ..] = rest else { return };
    let pc = PayloadCodec {
        threshold: usize::from(*threshold) * 4,
        // Qualities 10 and 11 (another match finder) cost tens of milliseconds even on a few KiB
        // once instrumented: only on small payloads, or they would eat the whole run.
        quality: u32::from(*quality % if raw.len() <= 1024 { 12 } else { 10 }),
        lgwin: DEFAULT_LGWIN,
        codec: ALL[usize::from(*pick % 4)],
    };
    let e = pc.encode(raw);
    assert!(e.bytes.len() <= raw.len(), "encoding grew {} bytes to {}", raw.len(), e.bytes.len());
    assert!(raw.len() > pc.threshold || e.codec == Codec::Identity, "a payload under the threshold is stored as is");
    assert!(e.codec == Codec::Identity || e.codec == pc.codec);
    assert_eq!(pc.encode(raw), e, "encoding is deterministic");
    match codec::decode(e.codec, &e.bytes) {
        Ok(out) => assert!(out == raw, "{:?} at quality {} does not round-trip", e.codec, pc.quality),
        Err(err) => panic!("{:?} at quality {} cannot decode its own output: {err}", e.codec, pc.quality),
    }
    assert_eq!(Codec::from_id(e.codec.id()).ok(), Some(e.codec));
    assert_eq!(Codec::from_marker(e.codec.marker()).ok(), Some(e.codec));
});
