//! Destinations: where a tenant's submissions are delivered (signed webhooks, Slack incoming
//! webhooks; the set of kinds is open). Each has its own `whsec_` signing secret, returned once,
//! and optional auth (bearer token, basic auth or custom headers). Secrets and credentials are
//! sealed like site secrets (AES-256-GCM, bound to the destination's key), write-only: no read
//! path returns them, `Debug` never prints them. Every change writes its audit event in the same
//! transaction, conditioned so a tenant can only touch its own destinations.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attrs::{destination as ds, AttrError, Attrs};
use crate::audit::AuditEvent;
use crate::ids::{DestinationId, FormId, SiteDomain, TenantId};
use crate::keys;
use crate::secrets::{Keyring, SigningSecret};
use crate::store::{failed_conditions, tx_exists, tx_put, DataStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// JSON POST of the decoded submission, Standard Webhooks signed.
    Webhook,
    /// A Slack incoming webhook: a readable message.
    Slack,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::Slack => "slack",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(Self::Webhook),
            "slack" => Some(Self::Slack),
            _ => None,
        }
    }
}

/// Optional credentials sent with each delivery. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum DestinationAuth {
    Bearer { token: String },
    Basic { username: String, password: String },
    Headers { headers: BTreeMap<String, String> },
}

impl std::fmt::Debug for DestinationAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.summary().as_str())
    }
}

impl DestinationAuth {
    /// What may be shown: the kind of auth, never a value.
    pub fn summary(&self) -> String {
        match self {
            DestinationAuth::Bearer { .. } => "bearer".into(),
            DestinationAuth::Basic { .. } => "basic".into(),
            DestinationAuth::Headers { headers } => {
                format!("headers({})", headers.keys().cloned().collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// How the worker retries and paces one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    /// Seconds before each retry after a 408, 429, 5xx, timeout or network error. The number of
    /// entries is the number of retries. Default: Svix's 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    pub retry_schedule: Vec<u32>,
    /// Seconds before each retry after any other 4xx (a receiver bug that may get fixed soon).
    pub client_error_schedule: Vec<u32>,
    /// Attempts in flight at once to this destination, per worker process.
    pub max_in_flight: u32,
}

pub const DEFAULT_RETRY_SCHEDULE: [u32; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
pub const DEFAULT_CLIENT_ERROR_SCHEDULE: [u32; 3] = [5, 60, 300];
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
/// Longest delay one schedule entry may ask for (the retention of a delivery message is longer).
pub const MAX_SCHEDULE_DELAY_S: u32 = 86_400;
pub const MAX_SCHEDULE_LEN: usize = 20;

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            retry_schedule: DEFAULT_RETRY_SCHEDULE.to_vec(),
            client_error_schedule: DEFAULT_CLIENT_ERROR_SCHEDULE.to_vec(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl DeliveryPolicy {
    pub fn check(&self) -> Result<(), DestinationError> {
        for s in [&self.retry_schedule, &self.client_error_schedule] {
            if s.len() > MAX_SCHEDULE_LEN || s.iter().any(|d| *d == 0 || *d > MAX_SCHEDULE_DELAY_S) {
                return Err(DestinationError::Policy("a schedule has at most 20 delays, each 1 s to 24 h"));
            }
        }
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(DestinationError::Policy("max in flight must be 1-64"));
        }
        Ok(())
    }

    fn to_attr(v: &[u32]) -> AttributeValue {
        AttributeValue::L(v.iter().map(|d| AttributeValue::N(d.to_string())).collect())
    }

    fn from_attr(v: Option<&AttributeValue>) -> Option<Vec<u32>> {
        v?.as_l().ok()?.iter().map(|d| d.as_n().ok()?.parse().ok()).collect()
    }
}

/// A destination as stored, with its secrets still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub tenant: TenantId,
    pub id: DestinationId,
    pub name: String,
    pub url: String,
    pub kind: DestinationKind,
    pub enabled: bool,
    /// Only these forms; empty means every form.
    pub forms: Vec<FormId>,
    /// Only submissions from these sites; empty means every site of the tenant.
    pub sites: Vec<SiteDomain>,
    pub timeout_ms: u64,
    pub secret_sealed: String,
    pub auth_sealed: Option<String>,
    pub auth_summary: Option<String>,
    pub policy: DeliveryPolicy,
    pub created_at: String,
    pub version: u64,
}

/// What the admin CLI shows: never a secret or credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationView {
    pub tenant_id: TenantId,
    pub destination_id: DestinationId,
    pub name: String,
    pub url: String,
    pub kind: DestinationKind,
    pub enabled: bool,
    pub forms: Vec<FormId>,
    pub sites: Vec<SiteDomain>,
    pub timeout_ms: u64,
    pub auth: Option<String>,
    pub policy: DeliveryPolicy,
    pub created_at: String,
}

/// The fields a create or update sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    pub url: String,
    pub kind: DestinationKind,
    pub forms: Vec<FormId>,
    pub timeout_ms: u64,
    pub auth: Option<DestinationAuth>,
    pub policy: DeliveryPolicy,
}

/// Tenants one create may span: two transaction items each (destination and audit event).
pub const MAX_TENANTS_PER_CREATE: usize = 50;

/// Default per-attempt timeout, the Standard Webhooks recommendation's lower end.
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid url {0:?}: {1}")]
    Url(String, &'static str),
    #[error("destination {0} not found for this tenant")]
    NotFound(DestinationId),
    #[error("destination {0} changed concurrently; try again")]
    Conflict(DestinationId),
    #[error("stored destination {0} is unreadable")]
    Corrupt(String),
    #[error("between 1 and {MAX_TENANTS_PER_CREATE} tenants per command")]
    Count,
    #[error("invalid delivery policy: {0}")]
    Policy(&'static str),
    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),
}

/// Checks the URL's shape (http or https, a host, no credentials in it). Where it resolves is
/// checked at send time by the delivery worker, since DNS can change after creation.
pub fn check_url(url: &str) -> Result<(), DestinationError> {
    let bad = |why| DestinationError::Url(url.chars().take(200).collect(), why);
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not carry credentials; use --bearer-token, basic auth or headers"));
    }
    if url.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    Ok(())
}

impl Destination {
    /// The AAD of this destination's sealed values.
    pub fn owner(tenant: &TenantId, id: &DestinationId) -> String {
        let k = keys::destination(tenant, id);
        format!("{}|{}", k.pk, k.sk)
    }

    pub fn view(&self) -> DestinationView {
        DestinationView {
            tenant_id: self.tenant.clone(),
            destination_id: self.id,
            name: self.name.clone(),
            url: self.url.clone(),
            kind: self.kind,
            enabled: self.enabled,
            forms: self.forms.clone(),
            sites: self.sites.clone(),
            timeout_ms: self.timeout_ms,
            auth: self.auth_summary.clone(),
            policy: self.policy.clone(),
            created_at: self.created_at.clone(),
        }
    }

    /// Whether a submission of `form` from `site` goes here now: enabled and matching.
    pub fn wants(&self, form: &FormId, site: &str) -> bool {
        self.enabled && self.matches(form, site)
    }

    /// Whether a submission of `form` from `site` is this destination's, enabled or not. The
    /// fan-out gives each matching destination a delivery: a disabled one's fails at once as
    /// `destination_disabled`, without a send, and waits on the failed worklist for a replay
    /// once it is enabled again (a destination disabled by a 410 loses nothing meanwhile).
    pub fn matches(&self, form: &FormId, site: &str) -> bool {
        (self.forms.is_empty() || self.forms.contains(form))
            && (self.sites.is_empty() || self.sites.iter().any(|s| s.as_str() == site))
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let k = keys::destination(&self.tenant, &self.id);
        let mut item = HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(k.pk)),
            (keys::SK.to_owned(), AttributeValue::S(k.sk)),
            (ds::NAME.to_owned(), AttributeValue::S(self.name.clone())),
            (ds::URL.to_owned(), AttributeValue::S(self.url.clone())),
            (ds::KIND.to_owned(), AttributeValue::S(self.kind.as_str().to_owned())),
            (ds::ENABLED.to_owned(), AttributeValue::Bool(self.enabled)),
            (ds::TIMEOUT_MS.to_owned(), AttributeValue::N(self.timeout_ms.to_string())),
            (ds::SECRET_SEALED.to_owned(), AttributeValue::S(self.secret_sealed.clone())),
            (ds::CREATED_AT.to_owned(), AttributeValue::S(self.created_at.clone())),
            (ds::VERSION.to_owned(), AttributeValue::N(self.version.to_string())),
            (ds::RETRY_SCHEDULE.to_owned(), DeliveryPolicy::to_attr(&self.policy.retry_schedule)),
            (ds::CLIENT_ERROR_SCHEDULE.to_owned(), DeliveryPolicy::to_attr(&self.policy.client_error_schedule)),
            (ds::MAX_IN_FLIGHT.to_owned(), AttributeValue::N(self.policy.max_in_flight.to_string())),
        ]);
        if !self.forms.is_empty() {
            item.insert(ds::FORMS.into(), AttributeValue::Ss(self.forms.iter().map(ToString::to_string).collect()));
        }
        if !self.sites.is_empty() {
            item.insert(ds::SITES.into(), AttributeValue::Ss(self.sites.iter().map(ToString::to_string).collect()));
        }
        if let (Some(a), Some(s)) = (&self.auth_sealed, &self.auth_summary) {
            item.insert(ds::AUTH_SEALED.into(), AttributeValue::S(a.clone()));
            item.insert(ds::AUTH_SUMMARY.into(), AttributeValue::S(s.clone()));
        }
        item
    }

    /// Decodes a destination item; the error names the attribute that is missing or unreadable.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Destination, AttrError> {
        let a = Attrs(item);
        let (tenant, id) = match keys::Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
            keys::Entity::Destination { tenant, dest } => (tenant, dest),
            _ => return Err(AttrError::Key("destination")),
        };
        let invalid = |name| move |_| AttrError::Invalid(name);
        let mut forms = a
            .string_set(ds::FORMS)?
            .iter()
            .map(|f| FormId::parse(f).map_err(invalid(ds::FORMS)))
            .collect::<Result<Vec<_>, _>>()?;
        forms.sort();
        let mut sites = a
            .string_set(ds::SITES)?
            .iter()
            .map(|d| SiteDomain::parse(d).map_err(invalid(ds::SITES)))
            .collect::<Result<Vec<_>, _>>()?;
        sites.sort();
        let d = DeliveryPolicy::default();
        let schedule = |name, default: Vec<u32>| match item.get(name) {
            None => Ok(default),
            Some(v) => DeliveryPolicy::from_attr(Some(v)).ok_or(AttrError::Invalid(name)),
        };
        Ok(Destination {
            tenant,
            id,
            name: a.s(ds::NAME)?.to_owned(),
            url: a.s(ds::URL)?.to_owned(),
            kind: a.parsed(ds::KIND, DestinationKind::parse)?,
            enabled: a.opt_bool(ds::ENABLED)?.ok_or(AttrError::Missing(ds::ENABLED))?,
            forms,
            sites,
            timeout_ms: a.n(ds::TIMEOUT_MS)?,
            secret_sealed: a.s(ds::SECRET_SEALED)?.to_owned(),
            auth_sealed: a.opt_s(ds::AUTH_SEALED)?.map(str::to_owned),
            auth_summary: a.opt_s(ds::AUTH_SUMMARY)?.map(str::to_owned),
            policy: DeliveryPolicy {
                retry_schedule: schedule(ds::RETRY_SCHEDULE, d.retry_schedule)?,
                client_error_schedule: schedule(ds::CLIENT_ERROR_SCHEDULE, d.client_error_schedule)?,
                max_in_flight: a.opt_n(ds::MAX_IN_FLIGHT)?.unwrap_or(d.max_in_flight),
            },
            created_at: a.s(ds::CREATED_AT)?.to_owned(),
            version: a.n(ds::VERSION)?,
        })
    }

    /// Opens the signing secret (for the delivery worker).
    pub fn signing_secret(&self, keyring: &Keyring) -> Result<SigningSecret, crate::secrets::SecretError> {
        keyring.open_secret(&self.secret_sealed, &Self::owner(&self.tenant, &self.id))
    }

    /// Opens the credentials (for the delivery worker).
    pub fn auth(&self, keyring: &Keyring) -> Result<Option<DestinationAuth>, crate::secrets::SecretError> {
        let Some(sealed) = &self.auth_sealed else { return Ok(None) };
        let plain = keyring.open(sealed, &Self::owner(&self.tenant, &self.id))?;
        serde_json::from_slice(&plain).map(Some).map_err(|_| crate::secrets::SecretError::Sealed)
    }
}

fn now_rfc3339(now: OffsetDateTime) -> String {
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn seal_auth(keyring: &Keyring, owner: &str, auth: &Option<DestinationAuth>) -> (Option<String>, Option<String>) {
    match auth {
        None => (None, None),
        Some(a) => {
            let plain = serde_json::to_vec(a).expect("auth serialises");
            (Some(keyring.seal(&plain, owner)), Some(a.summary()))
        }
    }
}

impl DataStore {
    /// Creates a destination for each tenant (agencies add one endpoint to many tenants at
    /// once); returns each new destination with its signing secret, shown only now. All or
    /// nothing, and only for tenants that exist.
    pub async fn create_destinations(
        &self,
        tenants: &[TenantId],
        spec: &DestinationSpec,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<Vec<(Destination, SigningSecret)>, DestinationError> {
        let targets: Vec<(TenantId, Vec<SiteDomain>)> = tenants.iter().map(|t| (t.clone(), Vec::new())).collect();
        self.create_destinations_for(&targets, spec, keyring, now).await
    }

    /// Like `create_destinations`, each tenant's destination limited to the given sites (none:
    /// all its sites). Agencies use it to add one endpoint to many sites at once.
    pub async fn create_destinations_for(
        &self,
        targets: &[(TenantId, Vec<SiteDomain>)],
        spec: &DestinationSpec,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<Vec<(Destination, SigningSecret)>, DestinationError> {
        let tenants: Vec<&TenantId> = targets.iter().map(|(t, _)| t).collect();
        check_url(&spec.url)?;
        spec.policy.check()?;
        if tenants.is_empty() || tenants.len() > MAX_TENANTS_PER_CREATE {
            return Err(DestinationError::Count);
        }
        let mut out = Vec::new();
        let mut items = Vec::new();
        for (t, sites) in targets {
            let (d, secret, tx) = self.new_destination_items(t, sites, spec, keyring, now);
            items.extend(tx);
            out.push((d, secret));
        }
        match self.transact(items).await {
            Ok(()) => Ok(out),
            Err(e) => {
                // Items go four per tenant: tenant check, destination, set version, audit event.
                let missing = failed_conditions(&e).and_then(|f| f.into_iter().find(|i| i % 4 == 0));
                match missing.and_then(|i| targets.get(i / 4)) {
                    Some((t, _)) => Err(DestinationError::TenantNotFound(t.clone())),
                    None => Err(StoreError::Dynamo(e).into()),
                }
            }
        }
    }

    /// A new destination of `tenant` and the transaction items that create it, four of them:
    /// the tenant's existence check, the destination, the set version and the audit event.
    pub(crate) fn new_destination_items(
        &self,
        t: &TenantId,
        sites: &[SiteDomain],
        spec: &DestinationSpec,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> (Destination, SigningSecret, Vec<TransactWriteItem>) {
        let id = DestinationId::new();
        let mut sites = sites.to_vec();
        sites.sort();
        sites.dedup();
        let owner = Destination::owner(t, &id);
        let secret = SigningSecret::generate();
        let (auth_sealed, auth_summary) = seal_auth(keyring, &owner, &spec.auth);
        let mut forms = spec.forms.clone();
        forms.sort();
        forms.dedup();
        let d = Destination {
            tenant: t.clone(),
            id,
            name: spec.name.clone(),
            url: spec.url.clone(),
            kind: spec.kind,
            enabled: true,
            forms,
            sites,
            timeout_ms: spec.timeout_ms,
            secret_sealed: keyring.seal_secret(&secret, &owner),
            auth_sealed,
            auth_summary,
            policy: spec.policy.clone(),
            created_at: now_rfc3339(now),
            version: 1,
        };
        let audit = AuditEvent::by(
            self.actor(),
            t,
            now,
            "destination.created",
            serde_json::json!({ "destination": id, "url": spec.url }),
        );
        // The tenant must exist when the destination is written: a condition in the same
        // transaction, not a read before it.
        let items = vec![
            tx_exists(self.table(), &keys::tenant_profile(t)),
            tx_put(self.table(), d.to_item(), Some("attribute_not_exists(PK)")),
            tx_bump_set(self.table(), t),
            tx_put(self.table(), audit.to_item(), None),
        ];
        (d, secret, items)
    }

    pub async fn get_destination(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
    ) -> Result<Option<Destination>, DestinationError> {
        let k = keys::destination(tenant, id);
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(keys::PK, AttributeValue::S(k.pk))
            .key(keys::SK, AttributeValue::S(k.sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Dynamo(e.into()))?;
        match out.item {
            None => Ok(None),
            Some(i) => {
                Destination::from_item(&i).map(Some).map_err(|e| DestinationError::Corrupt(format!("{id}: {e}")))
            }
        }
    }

    /// The destination-set version of each tenant (0 for a tenant whose destinations never
    /// changed): strongly consistent, in BatchGetItems of up to 100 tenants. A list read after
    /// a version is at least as new as that version.
    pub async fn destination_set_versions(
        &self,
        tenants: &[TenantId],
    ) -> Result<HashMap<TenantId, u64>, DestinationError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut out: HashMap<TenantId, u64> = tenants.iter().map(|t| (t.clone(), 0)).collect();
        for chunk in tenants.chunks(100) {
            let keys_of = |ts: &[TenantId]| {
                let keys = ts
                    .iter()
                    .map(|t| {
                        let k = keys::destination_set(t);
                        HashMap::from([
                            (keys::PK.to_owned(), AttributeValue::S(k.pk)),
                            (keys::SK.to_owned(), AttributeValue::S(k.sk)),
                        ])
                    })
                    .collect();
                KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build().expect("keys are set")
            };
            let mut request = Some(keys_of(chunk));
            let mut rounds = 0u32;
            while let Some(keys) = request.take() {
                let got = self
                    .client()
                    .batch_get_item()
                    .request_items(self.table(), keys)
                    .send()
                    .await
                    .map_err(|e| StoreError::Dynamo(e.into()))?;
                for item in got.responses.unwrap_or_default().remove(self.table()).unwrap_or_default() {
                    let a = Attrs(&item);
                    let read = || -> Result<Option<(TenantId, u64)>, AttrError> {
                        Ok(match keys::Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
                            keys::Entity::DestinationSet { tenant } => {
                                Some((tenant, a.n(crate::attrs::destination_set::VERSION)?))
                            }
                            _ => None,
                        })
                    };
                    let entry =
                        read().map_err(|e| DestinationError::Corrupt(format!("destination-set version: {e}")))?;
                    if let Some((tenant, v)) = entry {
                        out.insert(tenant, v);
                    }
                }
                request = got.unprocessed_keys.and_then(|mut u| u.remove(self.table())).filter(|k| !k.keys.is_empty());
                rounds += 1;
                if request.is_some() {
                    if rounds > 8 {
                        let left = request.as_ref().map_or(0, |k| k.keys.len());
                        return Err(StoreError::Exhausted(left).into());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25 << rounds.min(6))).await;
                }
            }
        }
        Ok(out)
    }

    /// A tenant's destinations: one Query of its partition.
    pub async fn list_destinations(&self, tenant: &TenantId) -> Result<Vec<Destination>, DestinationError> {
        let items = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :d)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::tenant_pk(tenant)))
            .expression_attribute_values(":d", AttributeValue::S(keys::DESTINATION_SK_PREFIX.into()))
            // Consistent: a destination created a moment before a submission must be seen.
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| StoreError::Dynamo(e.into()))?;
        // An unreadable destination is an error naming it, never silently left out of the list.
        items
            .iter()
            .map(|i| {
                Destination::from_item(i).map_err(|e| DestinationError::Corrupt(format!("in tenant {tenant}: {e}")))
            })
            .collect()
    }

    /// Applies `change` to a destination, conditioned on the version read.
    pub async fn update_destination(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
        keyring: &Keyring,
        now: OffsetDateTime,
        kind: &'static str,
        change: impl FnOnce(&mut Destination, &Keyring),
    ) -> Result<Destination, DestinationError> {
        let mut d = self.get_destination(tenant, id).await?.ok_or(DestinationError::NotFound(*id))?;
        let before = d.version;
        change(&mut d, keyring);
        check_url(&d.url)?;
        d.policy.check()?;
        d.version += 1;
        let mut put = tx_put(self.table(), d.to_item(), Some(&format!("{} = :v", ds::VERSION)));
        if let Some(p) = put.put.as_mut() {
            p.expression_attribute_values =
                Some(HashMap::from([(":v".to_owned(), AttributeValue::N(before.to_string()))]));
        }
        let audit = AuditEvent::by(self.actor(), tenant, now, kind, serde_json::json!({ "destination": id }));
        let items = vec![put, tx_put(self.table(), audit.to_item(), None), tx_bump_set(self.table(), tenant)];
        match self.transact(items).await {
            Ok(()) => Ok(d),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => Err(DestinationError::Conflict(*id)),
            Err(e) => Err(StoreError::Dynamo(e).into()),
        }
    }

    /// Sets `enabled` on every destination of a tenant (e.g. disable them all at once).
    pub async fn set_all_destinations_enabled(
        &self,
        tenant: &TenantId,
        enabled: bool,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<Vec<DestinationId>, DestinationError> {
        let mut changed = Vec::new();
        for d in self.list_destinations(tenant).await? {
            if d.enabled != enabled {
                let kind = if enabled { "destination.enabled" } else { "destination.disabled" };
                self.update_destination(tenant, &d.id, keyring, now, kind, |x, _| x.enabled = enabled).await?;
                changed.push(d.id);
            }
        }
        Ok(changed)
    }

    pub async fn delete_destination(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
        now: OffsetDateTime,
    ) -> Result<(), DestinationError> {
        let k = keys::destination(tenant, id);
        let del = Delete::builder()
            .table_name(self.table())
            .key(keys::PK, AttributeValue::S(k.pk))
            .key(keys::SK, AttributeValue::S(k.sk))
            .condition_expression("attribute_exists(PK)")
            .build()
            .expect("table and key are set");
        let audit =
            AuditEvent::by(self.actor(), tenant, now, "destination.deleted", serde_json::json!({ "destination": id }));
        match self
            .transact(vec![
                TransactWriteItem::builder().delete(del).build(),
                tx_put(self.table(), audit.to_item(), None),
                tx_bump_set(self.table(), tenant),
            ])
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => Err(DestinationError::NotFound(*id)),
            Err(e) => Err(StoreError::Dynamo(e).into()),
        }
    }
}

/// Bumps a tenant's destination-set version, inside the transaction that changes a destination.
pub(crate) fn tx_bump_set(table: &str, tenant: &TenantId) -> TransactWriteItem {
    let k = keys::destination_set(tenant);
    let update = aws_sdk_dynamodb::types::Update::builder()
        .table_name(table)
        .key(keys::PK, AttributeValue::S(k.pk))
        .key(keys::SK, AttributeValue::S(k.sk))
        .update_expression("ADD #v :one")
        .expression_attribute_names("#v", crate::attrs::destination_set::VERSION)
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .build()
        .expect("table, key and expression are set");
    TransactWriteItem::builder().update(update).build()
}

/// Re-seals new credentials on an update.
pub fn replace_auth(d: &mut Destination, keyring: &Keyring, auth: Option<DestinationAuth>) {
    let (sealed, summary) = seal_auth(keyring, &Destination::owner(&d.tenant, &d.id), &auth);
    d.auth_sealed = sealed;
    d.auth_summary = summary;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        for bad in ["ftp://x.com", "https://", "not a url", "https://user:pw@x.com/", "javascript:alert(1)"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_select_forms_and_sites() {
        let mut d = Destination {
            tenant: TenantId::parse("acme").unwrap(),
            id: DestinationId::new(),
            name: "n".into(),
            url: "https://x.example.com/".into(),
            kind: DestinationKind::Webhook,
            enabled: true,
            forms: vec![],
            sites: vec![],
            timeout_ms: DEFAULT_TIMEOUT_MS,
            secret_sealed: String::new(),
            auth_sealed: None,
            auth_summary: None,
            policy: DeliveryPolicy::default(),
            created_at: String::new(),
            version: 1,
        };
        let contact = FormId::parse("contact").unwrap();
        assert!(d.wants(&contact, "a.example.com"));
        d.sites = vec![SiteDomain::parse("a.example.com").unwrap()];
        assert!(d.wants(&contact, "a.example.com"));
        assert!(!d.wants(&contact, "b.example.com"));
        d.forms = vec![FormId::parse("quote").unwrap()];
        assert!(!d.wants(&contact, "a.example.com"));
        d.forms.clear();
        d.enabled = false;
        assert!(!d.wants(&contact, "a.example.com"));
        assert!(d.matches(&contact, "a.example.com"), "a disabled destination still matches");
        assert_eq!(
            Destination::from_item(&{
                let mut e = d.clone();
                e.enabled = true;
                e.to_item()
            })
            .unwrap()
            .sites,
            d.sites
        );
    }

    #[test]
    fn policies_are_checked() {
        assert!(DeliveryPolicy::default().check().is_ok());
        let bad = DeliveryPolicy { retry_schedule: vec![0], ..DeliveryPolicy::default() };
        assert!(bad.check().is_err());
        let bad = DeliveryPolicy { max_in_flight: 0, ..DeliveryPolicy::default() };
        assert!(bad.check().is_err());
        let bad = DeliveryPolicy { client_error_schedule: vec![5; 21], ..DeliveryPolicy::default() };
        assert!(bad.check().is_err());
    }

    #[test]
    fn credentials_never_show_in_debug_or_views() {
        let a = DestinationAuth::Basic { username: "u".into(), password: "hunter2".into() };
        assert_eq!(format!("{a:?}"), "basic");
        let h = DestinationAuth::Headers { headers: BTreeMap::from([("X-Api-Key".into(), "s3cret".into())]) };
        assert_eq!(h.summary(), "headers(X-Api-Key)");
        assert!(!format!("{h:?}").contains("s3cret"));
    }
}
