//! The payload codec. Submissions above a threshold are stored brotli-compressed; a short marker
//! stored beside the bytes (`codec`) names how to decode them, so reads are transparent and a
//! future codec (a shared dictionary, say) can coexist with items already written.
//!
//! Small forms (1-4 KiB) are where the money is and where plain brotli saves least, so the
//! default codec primes brotli with a shared dictionary (`dictionary_v1.txt`): the JSON shape of
//! our envelope, common field names, user agents, URL parts and stock phrases. A dictionary is
//! part of the stored format: once shipped it is never edited (a test pins its hash); a better
//! one is added as v2 beside it, and items written with v1 keep decoding with v1.
//!
//! Encoding must be deterministic: a redelivered queue message has to produce a byte-identical
//! item, so no timestamp, randomness or adaptive state may enter here.

use std::io::{Read, Write};

/// Payloads at or below this many bytes are stored as they are: compressing them rarely saves a
/// whole write unit and costs CPU on every read.
pub const DEFAULT_THRESHOLD: usize = 1024;

/// Brotli quality. Chosen by measurement (`cargo bench -p formbridge-loadtest --bench persister`,
/// figures in `loadtest/benches/RESULTS.md`): q5 saves within a few points of q6 on 1-4 KiB forms
/// at about 80-85% of its time, while q9+ is 20-50x slower for a few more points.
pub const DEFAULT_QUALITY: u32 = 5;

/// Brotli window (log2). 2^18 = 256 KiB covers the largest payload we accept in one window; a
/// larger window only costs memory.
pub const DEFAULT_LGWIN: u32 = 18;

/// Decoded payloads are capped: an item holds at most 400 KB and a queue message 1 MiB, so
/// anything larger is corrupt or hostile (a decompression bomb).
pub const MAX_DECODED: usize = 4 * 1024 * 1024;

/// Shared dictionary v1. Never edit: stored items depend on every byte.
pub const DICTIONARY_V1: &[u8] = include_bytes!("dictionary_v1.txt");

/// How a stored payload is encoded. The marker strings are stored in items: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Identity,
    /// Plain brotli, no dictionary.
    Brotli,
    /// Brotli primed with `DICTIONARY_V1`.
    BrotliDictV1,
}

impl Codec {
    pub fn marker(self) -> &'static str {
        match self {
            Codec::Identity => "id",
            Codec::Brotli => "br",
            Codec::BrotliDictV1 => "br.d1",
        }
    }

    /// Unknown markers are an error, never a guess.
    pub fn from_marker(marker: &str) -> Result<Codec, CodecError> {
        match marker {
            "id" => Ok(Codec::Identity),
            "br" => Ok(Codec::Brotli),
            "br.d1" => Ok(Codec::BrotliDictV1),
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
    /// Prime brotli with the shared dictionary (`br.d1`); plain brotli (`br`) otherwise.
    pub dictionary: bool,
}

impl Default for PayloadCodec {
    fn default() -> Self {
        Self { threshold: DEFAULT_THRESHOLD, quality: DEFAULT_QUALITY, lgwin: DEFAULT_LGWIN, dictionary: true }
    }
}

impl PayloadCodec {
    /// Compresses `raw` when it is over the threshold and compression actually makes it smaller.
    pub fn encode(&self, raw: &[u8]) -> Encoded {
        if raw.len() <= self.threshold {
            return Encoded { codec: Codec::Identity, bytes: raw.to_vec() };
        }
        let (codec, compressed) = if self.dictionary {
            (Codec::BrotliDictV1, brotli_compress_with_dictionary(raw, self.quality, self.lgwin, DICTIONARY_V1))
        } else {
            (Codec::Brotli, brotli_compress(raw, self.quality, self.lgwin))
        };
        if compressed.len() < raw.len() {
            Encoded { codec, bytes: compressed }
        } else {
            Encoded { codec: Codec::Identity, bytes: raw.to_vec() }
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
        Codec::BrotliDictV1 => {
            let dict = DICTIONARY_V1.to_vec().into();
            read_capped(brotli::Decompressor::new_with_custom_dict(bytes, 4096, dict))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DICTIONARY_V1_XXH3: u64 = 10_843_464_066_361_938_018;

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
        assert_eq!(e.codec, Codec::BrotliDictV1);
        assert!(e.bytes.len() < raw.len() / 4);
        assert_eq!(decode(e.codec, &e.bytes).unwrap(), raw.as_bytes());
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
        for c in [Codec::Identity, Codec::Brotli, Codec::BrotliDictV1] {
            assert_eq!(Codec::from_marker(c.marker()).unwrap(), c);
        }
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let bomb = brotli_compress(&vec![0u8; MAX_DECODED + 10], 5, 22);
        assert!(matches!(decode(Codec::Brotli, &bomb), Err(CodecError::TooLarge)));
        let bomb = brotli_compress_with_dictionary(&vec![0u8; MAX_DECODED + 10], 5, 22, DICTIONARY_V1);
        assert!(matches!(decode(Codec::BrotliDictV1, &bomb), Err(CodecError::TooLarge)));
    }

    /// Stored items depend on every byte of a shipped dictionary. If this fails, you edited
    /// dictionary v1: revert it and add a v2 with its own marker instead.
    #[test]
    fn dictionary_v1_never_changes() {
        assert_eq!(DICTIONARY_V1.len(), 2236);
        assert_eq!(xxhash_rust::xxh3::xxh3_64(DICTIONARY_V1), DICTIONARY_V1_XXH3);
    }

    #[test]
    fn the_dictionary_is_needed_to_decode() {
        let raw = crate::sample::text_heavy_payload(2048, 1).to_string();
        let e = PayloadCodec::default().encode(raw.as_bytes());
        assert_eq!(e.codec, Codec::BrotliDictV1);
        assert_ne!(decode(Codec::Brotli, &e.bytes).ok(), Some(raw.clone().into_bytes()));
        let plain = PayloadCodec { dictionary: false, ..PayloadCodec::default() }.encode(raw.as_bytes());
        assert_eq!(plain.codec, Codec::Brotli);
        assert!(e.bytes.len() < plain.bytes.len(), "the dictionary should help a 2 KiB form");
    }

    proptest! {
        #[test]
        fn round_trips_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..5000), threshold in 0usize..2048, dictionary in any::<bool>()) {
            let c = PayloadCodec { threshold, dictionary, ..PayloadCodec::default() };
            let e = c.encode(&raw);
            prop_assert!(e.bytes.len() <= raw.len());
            prop_assert_eq!(decode(e.codec, &e.bytes).unwrap(), raw);
        }
    }
}
