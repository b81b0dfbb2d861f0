//! The payload codec. Submissions above a threshold are stored brotli-compressed; a marker stored
//! with the bytes (one byte in front of them; the `codec` attribute in items of layout 1) names
//! how to decode them, so reads are transparent and codecs coexist with items already written.
//!
//! Small forms (1-4 KiB) are where the money is and where plain brotli saves least, so the
//! default codec primes brotli with a shared dictionary. v1 (`dictionary_v1.txt`, 2.2 KB) was
//! written by hand: the JSON shape of our envelope, field names, user agents, stock phrases.
//! v2 (`dictionary_v2.bin`, 64 KB) is trained with COVER on real, human-written text in form
//! envelopes (`loadtest/corpus/`; `formbridge-loadtest dictionary train`), its size, quality and
//! window chosen by a sweep on held-out text (`loadtest/benches/RESULTS.md`). A dictionary is part
//! of the stored format: once shipped it is never edited (a test pins its hash); a better one is
//! added beside it, and items written with an older one keep decoding with it.
//!
//! Encoding must be deterministic: a redelivered queue message has to produce a byte-identical
//! item, so no timestamp, randomness or adaptive state may enter here.

use std::io::{Read, Write};

/// Payloads at or below this many bytes are stored as they are: a sign-up's few hundred bytes
/// fit one write unit either way. Above it, dictionary v2 saves about two thirds even on 0.5-1 KiB
/// payloads, which keeps items whose payload is just under 1 KiB from spilling into a second
/// write unit once the keys are added.
pub const DEFAULT_THRESHOLD: usize = 512;

/// Brotli quality. Chosen by measurement (`formbridge-loadtest dictionary sweep` and `cargo bench
/// -p formbridge-loadtest --bench persister`, figures in `loadtest/benches/RESULTS.md`): with
/// dictionary v2, q6-q9 add under a point on held-out 1-4 KiB forms at 1.3-7x the time, q11 about
/// 1.5 points at ~40x.
pub const DEFAULT_QUALITY: u32 = 5;

/// Brotli window (log2). 2^18 = 256 KiB: the 64 KB dictionary and any payload up to 192 KB lie
/// within reach; a larger window only costs memory.
pub const DEFAULT_LGWIN: u32 = 18;

/// Decoded payloads are capped: an item holds at most 400 KB and a queue message 1 MiB, so
/// anything larger is corrupt or hostile (a decompression bomb).
pub const MAX_DECODED: usize = 4 * 1024 * 1024;

/// Shared dictionary v1. Never edit: stored items depend on every byte.
pub const DICTIONARY_V1: &[u8] = include_bytes!("dictionary_v1.txt");

/// Shared dictionary v2: trained with COVER on real human-written text in form envelopes
/// (`loadtest/corpus/`, `formbridge-loadtest dictionary train`). Never edit: stored items depend on every byte.
pub const DICTIONARY_V2: &[u8] = include_bytes!("dictionary_v2.bin");

/// How a stored payload is encoded. The marker strings are stored in items: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Identity,
    /// Plain brotli, no dictionary.
    Brotli,
    /// Brotli primed with `DICTIONARY_V1`.
    BrotliDictV1,
    /// Brotli primed with `DICTIONARY_V2`.
    BrotliDictV2,
}

impl Codec {
    pub fn marker(self) -> &'static str {
        match self {
            Codec::Identity => "id",
            Codec::Brotli => "br",
            Codec::BrotliDictV1 => "br.d1",
            Codec::BrotliDictV2 => "br.d2",
        }
    }

    /// The one-byte form stored in front of the payload (item layout 2). Stored: never renumber.
    pub fn id(self) -> u8 {
        match self {
            Codec::Identity => 0,
            Codec::Brotli => 1,
            Codec::BrotliDictV1 => 2,
            Codec::BrotliDictV2 => 3,
        }
    }

    pub fn from_id(id: u8) -> Result<Codec, CodecError> {
        match id {
            0 => Ok(Codec::Identity),
            1 => Ok(Codec::Brotli),
            2 => Ok(Codec::BrotliDictV1),
            3 => Ok(Codec::BrotliDictV2),
            other => Err(CodecError::UnknownCodec(format!("#{other}"))),
        }
    }

    /// The shared dictionary this codec primes brotli with.
    pub fn dictionary(self) -> Option<&'static [u8]> {
        match self {
            Codec::BrotliDictV1 => Some(DICTIONARY_V1),
            Codec::BrotliDictV2 => Some(DICTIONARY_V2),
            Codec::Identity | Codec::Brotli => None,
        }
    }

    /// Unknown markers are an error, never a guess.
    pub fn from_marker(marker: &str) -> Result<Codec, CodecError> {
        match marker {
            "id" => Ok(Codec::Identity),
            "br" => Ok(Codec::Brotli),
            "br.d1" => Ok(Codec::BrotliDictV1),
            "br.d2" => Ok(Codec::BrotliDictV2),
            other => Err(CodecError::UnknownCodec(other.chars().take(16).collect())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown payload codec {0:?}")]
    UnknownCodec(String),
    #[error("payload is corrupt: {0}")]
    Corrupt(#[from] std::io::Error),
    #[error("decoded payload exceeds {MAX_DECODED} bytes")]
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub codec: Codec,
    pub bytes: Vec<u8>,
}

/// Compression settings. `Default` is what production uses.
#[derive(Debug, Clone, Copy)]
pub struct PayloadCodec {
    pub threshold: usize,
    pub quality: u32,
    pub lgwin: u32,
    /// How payloads over the threshold are compressed: `Brotli`, `BrotliDictV1` or
    /// `BrotliDictV2` (the default). `Identity` stores everything as is.
    pub codec: Codec,
}

impl Default for PayloadCodec {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            quality: DEFAULT_QUALITY,
            lgwin: DEFAULT_LGWIN,
            codec: Codec::BrotliDictV2,
        }
    }
}

impl PayloadCodec {
    /// Compresses `raw` when it is over the threshold and compression actually makes it smaller.
    pub fn encode(&self, raw: &[u8]) -> Encoded {
        if raw.len() <= self.threshold {
            return Encoded { codec: Codec::Identity, bytes: raw.to_vec() };
        }
        let codec = self.codec;
        let compress = || match (codec, codec.dictionary()) {
            (Codec::Identity, _) => None,
            (_, Some(dict)) => Some(brotli_compress_with_dictionary(raw, self.quality, self.lgwin, dict)),
            (_, None) => Some(brotli_compress(raw, self.quality, self.lgwin)),
        };
        // The encoder is the one piece of someone else's code that sees every visitor's bytes,
        // and brotli 8 panicked on some of them (an index out of bounds at qualities 7-9 with a
        // dictionary; fuzz/RESULTS.md). A submission must never be lost to our storage format:
        // if the encoder panics, or its output does not decode back to the same bytes, the
        // payload is stored as it is. Both outcomes are deterministic for a given input, so a
        // redelivered message still writes the same item.
        let compressed = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(compress)) {
            Ok(Some(c)) => c,
            Ok(None) => return Encoded { codec, bytes: raw.to_vec() },
            Err(_) => {
                tracing::error!(
                    codec = codec.marker(),
                    quality = self.quality,
                    len = raw.len(),
                    "the compressor panicked: payload stored uncompressed"
                );
                return Encoded { codec: Codec::Identity, bytes: raw.to_vec() };
            }
        };
        if compressed.len() >= raw.len() {
            return Encoded { codec: Codec::Identity, bytes: raw.to_vec() };
        }
        match decode(codec, &compressed) {
            Ok(back) if back == raw => Encoded { codec, bytes: compressed },
            outcome => {
                let error = outcome.err().map(|e| e.to_string());
                tracing::error!(
                    codec = codec.marker(),
                    quality = self.quality,
                    len = raw.len(),
                    ?error,
                    "the compressor's output does not decode back: payload stored uncompressed"
                );
                Encoded { codec: Codec::Identity, bytes: raw.to_vec() }
            }
        }
    }
}

/// Plain brotli of `raw`, also used by the benchmark as the baseline "compression alone".
pub fn brotli_compress(raw: &[u8], quality: u32, lgwin: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, quality, lgwin);
        // Writing into a Vec cannot fail.
        w.write_all(raw).expect("in-memory write");
    }
    out
}

/// Brotli of `raw` with `dict` as the history it may refer back to.
pub fn brotli_compress_with_dictionary(raw: &[u8], quality: u32, lgwin: u32, dict: &[u8]) -> Vec<u8> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: quality as i32,
        lgwin: lgwin as i32,
        size_hint: raw.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    let mut input = raw;
    let (mut inbuf, mut outbuf) = (vec![0u8; 4096], vec![0u8; 4096]);
    brotli::BrotliCompressCustomIoCustomDict(
        &mut brotli::IoReaderWrapper(&mut input),
        &mut brotli::IoWriterWrapper(&mut out),
        &mut inbuf,
        &mut outbuf,
        &params,
        brotli::enc::StandardAlloc::default(),
        &mut |_: &mut brotli::interface::PredictionModeContextMap<brotli::InputReferenceMut>,
              _: &mut [brotli::interface::StaticCommand],
              _: brotli::InputPair,
              _: &mut brotli::enc::StandardAlloc| {},
        dict,
        std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
    )
    // Reading a slice and writing a Vec cannot fail.
    .expect("in-memory compression");
    out
}

fn read_capped(reader: impl Read) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader.take(MAX_DECODED as u64 + 1).read_to_end(&mut out)?;
    if out.len() > MAX_DECODED {
        return Err(CodecError::TooLarge);
    }
    Ok(out)
}

/// Decodes stored bytes according to their codec marker.
pub fn decode(codec: Codec, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        Codec::Identity => Ok(bytes.to_vec()),
        Codec::Brotli => read_capped(brotli::Decompressor::new(bytes, 4096)),
        Codec::BrotliDictV1 | Codec::BrotliDictV2 => {
            let dict = codec.dictionary().unwrap_or_default().to_vec().into();
            read_capped(brotli::Decompressor::new_with_custom_dict(bytes, 4096, dict))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DICTIONARY_V1_XXH3: u64 = 10_843_464_066_361_938_018;
    const DICTIONARY_V2_XXH3: u64 = 15_082_239_573_490_721_782;

    #[test]
    fn small_payloads_are_stored_as_is() {
        let e = PayloadCodec::default().encode(b"{\"a\":1}");
        assert_eq!(e.codec, Codec::Identity);
        assert_eq!(e.bytes, b"{\"a\":1}");
    }

    #[test]
    fn text_over_the_threshold_is_compressed() {
        let raw = "hello form bridge, ".repeat(100);
        let e = PayloadCodec::default().encode(raw.as_bytes());
        assert_eq!(e.codec, Codec::BrotliDictV2);
        assert!(e.bytes.len() < raw.len() / 4);
        assert_eq!(decode(e.codec, &e.bytes).unwrap(), raw.as_bytes());
    }

    /// Found by the `codec_decode` fuzz target: brotli 8 panicked compressing this payload
    /// (index out of bounds in release builds, a shift overflow in debug ones) with dictionary
    /// v1 at qualities 7-9 (the input is the fuzz seed: a mode byte, codec, quality and threshold,
    /// then the payload). Every codec at every quality must now store it and read it back.
    #[test]
    fn a_payload_that_broke_the_compressor_is_stored_and_read_back() {
        let raw = &include_bytes!("../../../fuzz/seeds/codec_decode/brotli8-panic-dictionary-v1-quality-8")[4..];
        for codec in [Codec::Brotli, Codec::BrotliDictV1, Codec::BrotliDictV2] {
            for quality in 0..=11 {
                let pc = PayloadCodec { threshold: 40, quality, lgwin: DEFAULT_LGWIN, codec };
                let e = pc.encode(raw);
                assert_eq!(decode(e.codec, &e.bytes).unwrap(), raw, "{codec:?} q{quality}");
                assert_eq!(e.codec, codec, "{codec:?} q{quality} fell back to storing as is");
            }
        }
    }

    #[test]
    fn encoding_is_deterministic() {
        let raw = crate::sample::text_heavy_payload(4096, 7).to_string();
        let c = PayloadCodec::default();
        assert_eq!(c.encode(raw.as_bytes()), c.encode(raw.as_bytes()));
    }

    #[test]
    fn unknown_markers_and_corrupt_bytes_are_errors() {
        assert!(matches!(Codec::from_marker("zstd"), Err(CodecError::UnknownCodec(_))));
        assert!(decode(Codec::Brotli, b"\xff\xff\xff\xffnot brotli").is_err());
        for c in [Codec::Identity, Codec::Brotli, Codec::BrotliDictV1, Codec::BrotliDictV2] {
            assert_eq!(Codec::from_marker(c.marker()).unwrap(), c);
            assert_eq!(Codec::from_id(c.id()).unwrap(), c);
        }
        assert!(Codec::from_id(4).is_err());
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let bomb = brotli_compress(&vec![0u8; MAX_DECODED + 10], 5, 22);
        assert!(matches!(decode(Codec::Brotli, &bomb), Err(CodecError::TooLarge)));
        for c in [Codec::BrotliDictV1, Codec::BrotliDictV2] {
            let bomb = brotli_compress_with_dictionary(&vec![0u8; MAX_DECODED + 10], 5, 22, c.dictionary().unwrap());
            assert!(matches!(decode(c, &bomb), Err(CodecError::TooLarge)));
        }
    }

    /// Stored items depend on every byte of a shipped dictionary. If this fails, you edited
    /// dictionary v1: revert it and add a v2 with its own marker instead.
    #[test]
    fn dictionary_v1_never_changes() {
        assert_eq!(DICTIONARY_V1.len(), 2236);
        assert_eq!(xxhash_rust::xxh3::xxh3_64(DICTIONARY_V1), DICTIONARY_V1_XXH3);
    }

    /// Likewise for v2: a better dictionary is a v3 beside it.
    #[test]
    fn dictionary_v2_never_changes() {
        assert_eq!(DICTIONARY_V2.len(), 65_397);
        assert_eq!(xxhash_rust::xxh3::xxh3_64(DICTIONARY_V2), DICTIONARY_V2_XXH3);
    }

    /// Payloads written with dictionary v1 (before v2 was the default) keep decoding, and only
    /// with v1: the marker picks the dictionary.
    #[test]
    fn payloads_written_with_v1_still_decode() {
        let raw = crate::sample::text_heavy_payload(2048, 5).to_string();
        let v1 = PayloadCodec { codec: Codec::BrotliDictV1, ..PayloadCodec::default() }.encode(raw.as_bytes());
        assert_eq!(v1.codec, Codec::BrotliDictV1);
        assert_eq!(decode(Codec::BrotliDictV1, &v1.bytes).unwrap(), raw.as_bytes());
        assert_ne!(decode(Codec::BrotliDictV2, &v1.bytes).ok(), Some(raw.clone().into_bytes()));
        let v2 = PayloadCodec::default().encode(raw.as_bytes());
        assert_eq!(v2.codec, Codec::BrotliDictV2);
        assert_eq!(decode(Codec::BrotliDictV2, &v2.bytes).unwrap(), raw.as_bytes());
    }

    #[test]
    fn the_dictionary_is_needed_to_decode() {
        let raw = crate::sample::text_heavy_payload(2048, 1).to_string();
        let e = PayloadCodec::default().encode(raw.as_bytes());
        assert_eq!(e.codec, Codec::BrotliDictV2);
        assert_ne!(decode(Codec::Brotli, &e.bytes).ok(), Some(raw.clone().into_bytes()));
        let plain = PayloadCodec { codec: Codec::Brotli, ..PayloadCodec::default() }.encode(raw.as_bytes());
        assert_eq!(plain.codec, Codec::Brotli);
        assert!(e.bytes.len() < plain.bytes.len(), "the dictionary should help a 2 KiB form");
    }

    proptest! {
        #[test]
        fn round_trips_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..5000), threshold in 0usize..2048, id in 0u8..4) {
            let c = PayloadCodec { threshold, codec: Codec::from_id(id).unwrap(), ..PayloadCodec::default() };
            let e = c.encode(&raw);
            prop_assert!(e.bytes.len() <= raw.len());
            prop_assert_eq!(decode(e.codec, &e.bytes).unwrap(), raw);
        }
    }
}
