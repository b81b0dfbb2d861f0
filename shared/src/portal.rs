//! Dashboard sign-in. `formbridge-admin portal-link` makes a one-time token (`fbp_<secret>`)
//! that lives a few minutes; opening the link exchanges it, once, for a session (`fbs_<secret>`)
//! that the API sets as an HttpOnly cookie. Both are stored only as keyed hashes under the
//! master key, like API keys, so a leaked table signs nobody in. State-changing requests made
//! with a session also carry a CSRF token: a MAC of the session token, so it needs no storage
//! and a page on another origin cannot compute it.
//!
//! The exchange is one transaction: the token is marked used under the condition that it was
//! not used and has not expired, the session is written, and an audit event records it. Two
//! concurrent exchanges of one token cannot both win.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use time::OffsetDateTime;

use crate::attrs::{self, Attrs};
use crate::audit::AuditEvent;
use crate::ids::TenantId;
use crate::keys;
use crate::secrets::Keyring;
use crate::store::{failed_conditions, tx_put, DataStore, StoreError};

pub const TOKEN_PREFIX: &str = "fbp_";
pub const SESSION_PREFIX: &str = "fbs_";
const TOKEN_PURPOSE: &str = "portal-token";
const SESSION_PURPOSE: &str = "portal-session";
const CSRF_PURPOSE: &str = "portal-csrf";
const SECRET_BYTES: usize = 32;
/// The longest a portal link may live.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a session may live.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

mod pt {
    pub const TENANT: &str = "tenant_id";
    pub const EXPIRES_MS: &str = "expires_ms";
    pub const SESSION_TTL_S: &str = "session_ttl_s";
    pub const USED_MS: &str = "used_ms";
    pub const CREATED_MS: &str = "created_ms";
}

/// A secret credential (`fbp_...` or `fbs_...`); its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}<redacted>)", &self.0[..4.min(self.0.len())])
    }
}

impl Credential {
    fn generate(prefix: &str) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        Self(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret)))
    }

    fn parse(s: &str, prefix: &str) -> Option<Self> {
        let secret = s.trim().strip_prefix(prefix)?;
        (URL_SAFE_NO_PAD.decode(secret).ok()?.len() == SECRET_BYTES).then(|| Self(s.trim().to_owned()))
    }

    /// A session cookie's value, if it has the shape of one.
    pub fn parse_session(s: &str) -> Option<Self> {
        Self::parse(s, SESSION_PREFIX)
    }

    /// The credential itself, to hand over once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A signed-in dashboard session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub tenant: TenantId,
    pub expires_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// Unknown, already used or expired: one answer for all three.
    #[error("this sign-in link was already used or has expired; ask for a new one")]
    TokenInvalid,
    #[error("the session is not valid; sign in again")]
    SessionInvalid,
    #[error("tenant {0} does not exist")]
    TenantMissing(TenantId),
    #[error("a portal link lives 1 s to 24 h and a session 1 min to 7 days")]
    Ttl,
    #[error("stored sign-in item is unreadable: {0}")]
    Corrupt(#[from] attrs::AttrError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn dynamo<E>(e: E) -> PortalError
where
    aws_sdk_dynamodb::Error: From<E>,
{
    PortalError::Store(StoreError::Dynamo(e.into()))
}

/// The CSRF token of a session: a MAC of the session credential.
pub fn csrf_token(keyring: &Keyring, session: &Credential) -> String {
    URL_SAFE_NO_PAD.encode(&keyring.mac(CSRF_PURPOSE, session.0.as_bytes())[..16])
}

/// Whether `presented` is the CSRF token of the session `cookie`.
pub fn verify_csrf(keyring: &Keyring, cookie: &str, presented: &str) -> bool {
    let Some(session) = Credential::parse(cookie, SESSION_PREFIX) else { return false };
    let Ok(tag) = URL_SAFE_NO_PAD.decode(presented.trim()) else { return false };
    tag.len() == 16 && keyring.verify_mac(CSRF_PURPOSE, session.0.as_bytes(), &tag)
}

impl DataStore {
    /// A one-time sign-in token for `tenant`, valid for `ttl`; the session it opens lasts
    /// `session_ttl`. Returns the token (shown once) and its expiry.
    pub async fn create_portal_token(
        &self,
        tenant: &TenantId,
        ttl: Duration,
        session_ttl: Duration,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<(Credential, u64), PortalError> {
        if ttl.is_zero() || ttl > MAX_LINK_TTL || session_ttl < Duration::from_secs(60) || session_ttl > MAX_SESSION_TTL
        {
            return Err(PortalError::Ttl);
        }
        if self.get_tenant(tenant).await?.is_none() {
            return Err(PortalError::TenantMissing(tenant.clone()));
        }
        let token = Credential::generate(TOKEN_PREFIX);
        let (_, hash) = keyring.lookup_hashes(TOKEN_PURPOSE, token.0.as_bytes()).swap_remove(0);
        let expires_ms = ms(now) + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let k = keys::portal_token(&hash);
        let item = HashMap::from([
            (keys::PK.to_owned(), attrs::s(k.pk)),
            (keys::SK.to_owned(), attrs::s(k.sk)),
            (pt::TENANT.to_owned(), attrs::s(tenant.as_str())),
            (pt::EXPIRES_MS.to_owned(), attrs::n(expires_ms)),
            (pt::SESSION_TTL_S.to_owned(), attrs::n(session_ttl.as_secs())),
            (pt::CREATED_MS.to_owned(), attrs::n(ms(now))),
            // DynamoDB's TTL removes it a day after it could last be used.
            (keys::TTL.to_owned(), attrs::n(expires_ms / 1000 + 86_400)),
        ]);
        let audit = AuditEvent::admin(
            tenant,
            now,
            "portal.link_created",
            serde_json::json!({ "expires_ms": expires_ms, "session_ttl_s": session_ttl.as_secs() }),
        );
        self.transact(vec![
            tx_put(self.table(), item, Some("attribute_not_exists(PK)")),
            tx_put(self.table(), audit.to_item(), None),
        ])
        .await
        .map_err(StoreError::Dynamo)?;
        Ok((token, expires_ms))
    }

    /// Exchanges a portal token, once, for a session.
    pub async fn exchange_portal_token(
        &self,
        presented: &str,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<(Credential, Session), PortalError> {
        let token = Credential::parse(presented, TOKEN_PREFIX).ok_or(PortalError::TokenInvalid)?;
        let now_ms = ms(now);
        for (_, hash) in keyring.lookup_hashes(TOKEN_PURPOSE, token.0.as_bytes()) {
            let k = keys::portal_token(&hash);
            let Some(item) = self.get_item(&k, true).await.map_err(dynamo)? else { continue };
            let a = Attrs(&item);
            let tenant = TenantId::parse(a.s(pt::TENANT)?).map_err(|_| attrs::AttrError::Invalid(pt::TENANT))?;
            let expires_ms: u64 = a.n(pt::EXPIRES_MS)?;
            if a.opt_n::<u64>(pt::USED_MS)?.is_some() || expires_ms <= now_ms {
                return Err(PortalError::TokenInvalid);
            }
            let session_ttl_ms = a.n::<u64>(pt::SESSION_TTL_S)? * 1000;
            let session = Session { tenant: tenant.clone(), expires_ms: now_ms + session_ttl_ms };
            let cookie = Credential::generate(SESSION_PREFIX);
            let (_, shash) = keyring.lookup_hashes(SESSION_PURPOSE, cookie.0.as_bytes()).swap_remove(0);
            let sk = keys::session(&shash);
            let session_item = HashMap::from([
                (keys::PK.to_owned(), attrs::s(sk.pk)),
                (keys::SK.to_owned(), attrs::s(sk.sk)),
                (pt::TENANT.to_owned(), attrs::s(tenant.as_str())),
                (pt::EXPIRES_MS.to_owned(), attrs::n(session.expires_ms)),
                (pt::CREATED_MS.to_owned(), attrs::n(now_ms)),
                (keys::TTL.to_owned(), attrs::n(session.expires_ms / 1000 + 3600)),
            ]);
            let used = Update::builder()
                .table_name(self.table())
                .key(keys::PK, AttributeValue::S(k.pk))
                .key(keys::SK, AttributeValue::S(k.sk))
                .update_expression("SET #u = :now")
                .condition_expression("attribute_exists(PK) AND attribute_not_exists(#u) AND #e > :now")
                .expression_attribute_names("#u", pt::USED_MS)
                .expression_attribute_names("#e", pt::EXPIRES_MS)
                .expression_attribute_values(":now", attrs::n(now_ms))
                .build()
                .expect("table, key and expression are set");
            let audit = AuditEvent::by(
                "portal",
                &tenant,
                now,
                "portal.signed_in",
                serde_json::json!({ "session_expires_ms": session.expires_ms }),
            );
            return match self
                .transact(vec![
                    TransactWriteItem::builder().update(used).build(),
                    tx_put(self.table(), session_item, Some("attribute_not_exists(PK)")),
                    tx_put(self.table(), audit.to_item(), None),
                ])
                .await
            {
                Ok(()) => Ok((cookie, session)),
                Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => Err(PortalError::TokenInvalid),
                Err(e) => Err(StoreError::Dynamo(e).into()),
            };
        }
        Err(PortalError::TokenInvalid)
    }

    /// The session a cookie stands for: one GetItem.
    pub async fn authenticate_session(
        &self,
        cookie: &str,
        keyring: &Keyring,
        now_ms: u64,
    ) -> Result<Session, PortalError> {
        let cookie = Credential::parse(cookie, SESSION_PREFIX).ok_or(PortalError::SessionInvalid)?;
        for (_, hash) in keyring.lookup_hashes(SESSION_PURPOSE, cookie.0.as_bytes()) {
            let Some(item) = self.get_item(&keys::session(&hash), false).await.map_err(dynamo)? else { continue };
            let a = Attrs(&item);
            let tenant = TenantId::parse(a.s(pt::TENANT)?).map_err(|_| attrs::AttrError::Invalid(pt::TENANT))?;
            let expires_ms: u64 = a.n(pt::EXPIRES_MS)?;
            if expires_ms <= now_ms {
                return Err(PortalError::SessionInvalid);
            }
            return Ok(Session { tenant, expires_ms });
        }
        Err(PortalError::SessionInvalid)
    }

    /// Signs a session out (deletes it). Unknown sessions are fine: signing out is idempotent.
    pub async fn end_session(&self, cookie: &str, keyring: &Keyring) -> Result<(), PortalError> {
        let Some(cookie) = Credential::parse(cookie, SESSION_PREFIX) else { return Ok(()) };
        for (_, hash) in keyring.lookup_hashes(SESSION_PURPOSE, cookie.0.as_bytes()) {
            let k = keys::session(&hash);
            self.client()
                .delete_item()
                .table_name(self.table())
                .key(keys::PK, AttributeValue::S(k.pk))
                .key(keys::SK, AttributeValue::S(k.sk))
                .send()
                .await
                .map_err(dynamo)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::parse(&Keyring::generate_spec("k1"), "TEST").unwrap()
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let k = keyring();
        let a = Credential::generate(SESSION_PREFIX);
        let b = Credential::generate(SESSION_PREFIX);
        let t = csrf_token(&k, &a);
        assert!(verify_csrf(&k, a.expose(), &t));
        assert!(!verify_csrf(&k, b.expose(), &t), "another session's token");
        assert!(!verify_csrf(&k, a.expose(), ""), "no token");
        assert!(!verify_csrf(&k, a.expose(), &csrf_token(&keyring(), &a)), "another master key");
        assert!(!verify_csrf(&k, "fbs_short", &t), "malformed cookie");
    }

    #[test]
    fn credentials_parse_strictly_and_never_debug_print() {
        let t = Credential::generate(TOKEN_PREFIX);
        assert!(Credential::parse(t.expose(), TOKEN_PREFIX).is_some());
        assert!(Credential::parse(t.expose(), SESSION_PREFIX).is_none(), "a token is not a session");
        assert!(Credential::parse("fbp_AAAA", TOKEN_PREFIX).is_none());
        assert!(!format!("{t:?}").contains(&t.expose()[4..]));
    }
}
