//! Signing secrets and their encryption at rest.
//!
//! A site's (or destination's) signing secret is a Standard Webhooks `whsec_` secret: 32 random
//! bytes, base64. It is shown once, when created or rotated, and stored only sealed with
//! AES-256-GCM under a master key. The ciphertext is bound to its owner (the AAD is e.g. the site
//! domain), so a sealed secret copied onto another item does not open.
//!
//! Master keys come from `FORMBRIDGE_MASTER_KEYS` or the file named by
//! `FORMBRIDGE_MASTER_KEYS_FILE`: a comma-separated list of `key-id:base64(32 bytes)`, the first
//! sealing new secrets and all opening old ones, so a master key can be rotated without
//! re-encrypting. Neither type prints its contents in `Debug`.

use std::fmt;
use std::path::PathBuf;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use crate::aws::ConfigError;

const WHSEC: &str = "whsec_";

/// A `whsec_` signing secret in plaintext. Exists only between generation and sealing, or between
/// opening and building a verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// 32 fresh random bytes.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(format!("{WHSEC}{}", B64.encode(key)))
    }

    /// Accepts `whsec_` + base64 of 24 to 64 bytes.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix(WHSEC).ok_or(SecretError::Format)?;
        let key = B64.decode(b64).map_err(|_| SecretError::Format)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Format);
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret itself, for the one answer that returns it and for building a verifier.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a signing secret is whsec_ followed by base64 of 24 to 64 bytes")]
    Format,
    #[error("sealed secret is malformed")]
    Sealed,
    #[error("sealed with master key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("sealed secret does not open with its master key (wrong key or wrong owner)")]
    Open,
}

/// The master keys: the first seals, every one opens.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
    /// Per master key, a key for keyed lookup hashes (HMAC-SHA256), derived from it, so a
    /// credential can be found by its hash without being stored.
    lookups: Vec<(String, [u8; 32])>,
}

/// HMAC-SHA256 of `data` under `key`.
fn hmac256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<_> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

impl Keyring {
    /// Parses `id:base64,id:base64`.
    pub fn parse(spec: &str, setting: &'static str) -> Result<Self, ConfigError> {
        let bad = |rule| ConfigError { setting, value: "<redacted>".into(), rule };
        let mut keys = Vec::new();
        let mut lookups = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, b64) = part.split_once(':').ok_or_else(|| bad("each key is key-id:base64"))?;
            if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(bad("a key id is 1-16 of A-Z a-z 0-9 -"));
            }
            let key = B64.decode(b64).map_err(|_| bad("a key is base64"))?;
            if key.len() != 32 {
                return Err(bad("a key is 32 bytes (AES-256)"));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(bad("key ids must be unique"));
            }
            keys.push((id.to_owned(), Aes256Gcm::new_from_slice(&key).map_err(|_| bad("a key is 32 bytes"))?));
            lookups.push((id.to_owned(), hmac256(&key, b"formbridge lookup-hash key v1")));
        }
        if keys.is_empty() {
            return Err(bad("at least one master key is required"));
        }
        Ok(Self { keys, lookups })
    }

    /// A fresh key spec (`k1:<base64>`), for local set-ups and tests.
    pub fn generate_spec(id: &str) -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        format!("{id}:{}", B64.encode(key))
    }

    /// Seals `plaintext`, bound to `owner`. Output: `v1:<key id>:<base64(nonce || ciphertext)>`.
    pub fn seal(&self, plaintext: &[u8], owner: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: owner.as_bytes() })
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend(ct);
        format!("v1:{id}:{}", B64.encode(out))
    }

    pub fn open(&self, sealed: &str, owner: &str) -> Result<Vec<u8>, SecretError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some("v1"), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SecretError::Sealed);
        };
        let (_, cipher) =
            self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let raw = B64.decode(b64).map_err(|_| SecretError::Sealed)?;
        if raw.len() < 12 + 16 {
            return Err(SecretError::Sealed);
        }
        let (nonce, ct) = raw.split_at(12);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: owner.as_bytes() })
            .map_err(|_| SecretError::Open)
    }

    /// Keyed hashes of `data` for `purpose` (base64url), one per master key, the sealing key's
    /// first: a credential stored by its hash under the current key is still found after a new
    /// master key is put first.
    pub fn lookup_hashes(&self, purpose: &str, data: &[u8]) -> Vec<(&str, String)> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        self.lookups
            .iter()
            .map(|(id, key)| {
                (id.as_str(), URL_SAFE_NO_PAD.encode(hmac256(key, &[purpose.as_bytes(), &[0], data].concat())))
            })
            .collect()
    }

    /// A MAC of `data` for `purpose` under the first master key's derived key.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let (_, key) = self.lookups.first().expect("a keyring has at least one key");
        hmac256(key, &[purpose.as_bytes(), &[0], data].concat())
    }

    /// Whether `tag` is the MAC of `data` for `purpose` under any master key (constant time per key).
    pub fn verify_mac(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        use hmac::{KeyInit, Mac};
        let msg = [purpose.as_bytes(), &[0], data].concat();
        self.lookups.iter().any(|(_, key)| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(&msg);
            mac.verify_truncated_left(tag).is_ok()
        })
    }

    pub fn seal_secret(&self, secret: &SigningSecret, owner: &str) -> String {
        self.seal(secret.expose().as_bytes(), owner)
    }

    pub fn open_secret(&self, sealed: &str, owner: &str) -> Result<SigningSecret, SecretError> {
        let plain = self.open(sealed, owner)?;
        SigningSecret::parse(std::str::from_utf8(&plain).map_err(|_| SecretError::Format)?)
    }
}

/// Where a process finds its master keys.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyringArgs {
    /// Master keys, `key-id:base64(32 bytes)[,older-id:base64...]`; the first seals.
    #[arg(long = "master-keys", env = "FORMBRIDGE_MASTER_KEYS", hide_env_values = true)]
    pub master_keys: Option<String>,
    /// A file holding the same (preferred in production: e.g. written from Secrets Manager).
    #[arg(long = "master-keys-file", env = "FORMBRIDGE_MASTER_KEYS_FILE")]
    pub master_keys_file: Option<PathBuf>,
}

impl KeyringArgs {
    pub fn load(&self) -> Result<Keyring, ConfigError> {
        match (&self.master_keys, &self.master_keys_file) {
            (Some(spec), _) => Keyring::parse(spec, "FORMBRIDGE_MASTER_KEYS"),
            (None, Some(path)) => {
                let spec = std::fs::read_to_string(path).map_err(|_| ConfigError {
                    setting: "FORMBRIDGE_MASTER_KEYS_FILE",
                    value: path.display().to_string(),
                    rule: "must name a readable file",
                })?;
                Keyring::parse(spec.trim(), "FORMBRIDGE_MASTER_KEYS_FILE")
            }
            (None, None) => Err(ConfigError {
                setting: "FORMBRIDGE_MASTER_KEYS",
                value: String::new(),
                rule: "set it or FORMBRIDGE_MASTER_KEYS_FILE: secrets are stored encrypted under it",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_and_never_debug_printed() {
        let s = SigningSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert!(SigningSecret::parse(s.expose()).is_ok());
        assert_eq!(format!("{s:?}"), "SigningSecret(<redacted>)");
        assert!(SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(SigningSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn sealed_secrets_open_only_for_their_owner_and_key() {
        let ring = Keyring::parse(&Keyring::generate_spec("k1"), "T").unwrap();
        let s = SigningSecret::generate();
        let sealed = ring.seal_secret(&s, "SITE#a.com");
        assert!(!sealed.contains(s.expose()));
        assert_eq!(ring.open_secret(&sealed, "SITE#a.com").unwrap(), s);
        assert!(matches!(ring.open_secret(&sealed, "SITE#b.com"), Err(SecretError::Open)));
        let other = Keyring::parse(&Keyring::generate_spec("k1"), "T").unwrap();
        assert!(matches!(other.open_secret(&sealed, "SITE#a.com"), Err(SecretError::Open)));
        assert_ne!(ring.seal_secret(&s, "SITE#a.com"), sealed, "nonces are fresh");
    }

    #[test]
    fn old_master_keys_keep_opening_after_rotation() {
        let k1 = Keyring::generate_spec("k1");
        let old = Keyring::parse(&k1, "T").unwrap();
        let sealed = old.seal(b"x", "o");
        let rotated = Keyring::parse(&format!("{},{k1}", Keyring::generate_spec("k2")), "T").unwrap();
        assert_eq!(rotated.open(&sealed, "o").unwrap(), b"x");
        assert!(rotated.seal(b"x", "o").starts_with("v1:k2:"));
        let without_k1 = Keyring::parse(&Keyring::generate_spec("k3"), "T").unwrap();
        assert!(matches!(without_k1.open(&sealed, "o"), Err(SecretError::UnknownKey(id)) if id == "k1"));
    }

    #[test]
    fn bad_key_specs_name_the_setting_without_echoing_the_key() {
        for spec in ["", "k1", "k1:notbase64!", "k1:c2hvcnQ=", "k 1:AAAA"] {
            let e = Keyring::parse(spec, "FORMBRIDGE_MASTER_KEYS").unwrap_err();
            assert_eq!(e.setting, "FORMBRIDGE_MASTER_KEYS");
            assert_eq!(e.value, "<redacted>");
        }
        let dup = format!("{},{}", Keyring::generate_spec("a"), Keyring::generate_spec("a"));
        assert!(Keyring::parse(&dup, "T").is_err());
    }
}
