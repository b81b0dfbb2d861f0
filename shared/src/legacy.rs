//! Migration from a legacy WordPress authentication table to tenants, sites and destinations
//! (`formbridge-admin migrate`).
//!
//! **The table we accept** is any DynamoDB table whose items carry, under these attribute names
//! (the aliases in brackets are accepted too), strings unless noted:
//!
//! - `site_url` [`url`, `site`, `domain`]: the site's address, `https://www.example.com/` or a
//!   bare host name;
//! - `api_key` [`secret`, `key`]: the key the site signs with: a Standard Webhooks `whsec_`
//!   secret, or a raw key of 24 to 64 bytes used as the HMAC key as it is;
//! - `owner` [`customer`, `agency`]: the owning agency or customer; one tenant per owner;
//! - `status`: `active` (or absent, `enabled`, `1`) is migrated; `inactive`, `disabled`,
//!   `suspended`, `deleted`, `revoked`, `0` are skipped; anything else is a problem;
//! - `created_at` [`created`]: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC, as WordPress stores it) or
//!   epoch seconds (a number);
//! - `webhook_url` [`destination_url`] (optional): where the old system forwarded the site's
//!   submissions; it becomes the tenant's default destination.
//!
//! The migration reads the table with a consistent Scan and never writes it. [`plan`] is pure: it
//! turns rows into tenants, sites and destinations, and lists every problem (a row it cannot
//! migrate is skipped with a reason; a row it migrates with a caveat carries a warning).
//! [`assess`] adds what the data table already holds, [`apply`] writes with conditions, each
//! created item with its manifest entry (`MIGRATION#<id>`) in one transaction, so a re-run
//! creates nothing twice, and [`verify`] checks the result: every site resolves to its tenant and
//! every legacy key signs a test message that the stored, sealed secret verifies. [`rollback`]
//! removes what the manifest lists, and only while it is still what the migration created.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};
use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;

use crate::attrs::{site as st, tenant as tn};
use crate::audit::AuditEvent;
use crate::destination::{check_url, DeliveryPolicy, DestinationKind, DestinationSpec, DEFAULT_TIMEOUT_MS};
use crate::ids::{MigrationId, SiteDomain, TenantId};
use crate::keys::{self, ItemKey};
use crate::secrets::{Keyring, SigningSecret};
use crate::sharding::ShardHistory;
use crate::site::{SiteRecord, SiteSecret};
use crate::store::{failed_conditions, tx_put, DataStore, StoreError};
use crate::tenant::{TenantProfile, DEFAULT_RETENTION_DAYS};

/// The attribute on every item a migration created, naming it (informational: a later rewrite
/// of the item may drop it; the manifest is what rollback trusts).
pub const MIGRATION_ATTR: &str = "migration";
/// Manifest entry attributes.
const ENTRY_KIND: &str = "kind";
const ENTRY_TENANT: &str = "tenant_id";
const ENTRY_PK: &str = "target_pk";
const ENTRY_SK: &str = "target_sk";
const ENTRY_CREATED_AT: &str = "created_at";

/// Sites per transaction: each is two items (site and manifest entry), plus one audit event.
const SITES_PER_TRANSACTION: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
    #[error(transparent)]
    Destination(#[from] crate::destination::DestinationError),
    #[error("reading legacy table {table}: {source}")]
    Legacy { table: String, source: aws_sdk_dynamodb::Error },
}

fn dynamo<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> MigrationError
where
    aws_sdk_dynamodb::Error: From<aws_sdk_dynamodb::error::SdkError<E, R>>,
{
    MigrationError::Store(StoreError::Dynamo(e.into()))
}

/// One item of the legacy table, by the accepted names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LegacyRow {
    pub site_url: Option<String>,
    #[serde(skip)]
    pub api_key: Option<String>,
    pub owner: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<String>,
    pub webhook_url: Option<String>,
}

impl LegacyRow {
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> LegacyRow {
        let get = |names: &[&str]| {
            names.iter().find_map(|n| match item.get(*n)? {
                AttributeValue::S(s) => Some(s.clone()),
                AttributeValue::N(n) => Some(n.clone()),
                AttributeValue::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
                _ => None,
            })
        };
        LegacyRow {
            site_url: get(&["site_url", "url", "site", "domain"]),
            api_key: get(&["api_key", "secret", "key"]),
            owner: get(&["owner", "customer", "agency"]),
            status: get(&["status"]),
            created_at: get(&["created_at", "created"]),
            webhook_url: get(&["webhook_url", "destination_url"]),
        }
    }
}

/// Every row of the legacy table: a consistent, paginated Scan, the only call made on it.
pub async fn read_legacy(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<LegacyRow>, MigrationError> {
    let items = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| MigrationError::Legacy { table: table.to_owned(), source: e.into() })?;
    Ok(items.iter().map(LegacyRow::from_item).collect())
}

/// What went wrong with a row, or what to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    // The row is skipped:
    BadUrl,
    MissingOwner,
    MissingKey,
    UnusableKey,
    UnknownStatus,
    /// The same domain under different owners: none of its rows is migrated.
    DuplicateDomain,
    /// The domain is registered in Form-Bridge already, not by this migration.
    DomainTaken,
    // The row is migrated, with a caveat:
    BadWebhookUrl,
    BadCreatedAt,
    /// Two owners whose names make the same tenant id: each gets a suffix from its name.
    TenantIdDisambiguated,
    /// The tenant exists already (not from this migration): the sites join it.
    TenantExists,
    /// No webhook URL for any of the owner's sites, and no `--default-destination-url`.
    NoDestination,
}

impl ProblemKind {
    pub fn skips_row(self) -> bool {
        matches!(
            self,
            ProblemKind::BadUrl
                | ProblemKind::MissingOwner
                | ProblemKind::MissingKey
                | ProblemKind::UnusableKey
                | ProblemKind::UnknownStatus
                | ProblemKind::DuplicateDomain
                | ProblemKind::DomainTaken
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Index of the row in the order read (absent for a tenant-wide note).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    pub site_url: String,
    pub kind: ProblemKind,
    /// `skipped` (the row is not migrated) or `warning`.
    pub severity: &'static str,
    pub detail: String,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RowOutcome {
    /// The row is (or will be) a site of the tenant.
    Migrated { domain: SiteDomain, tenant: TenantId },
    /// Another row of the same site and owner: its key joins that site's secrets (or is the same).
    Merged { domain: SiteDomain, tenant: TenantId },
    /// Not active in the legacy table.
    Inactive,
    /// Skipped for a problem.
    Problem { kind: ProblemKind },
}

impl RowOutcome {
    /// A short label: `migrated`, `merged`, `inactive`, `problem:<kind>`.
    pub fn label(&self) -> String {
        match self {
            RowOutcome::Migrated { .. } => "migrated".into(),
            RowOutcome::Merged { .. } => "merged".into(),
            RowOutcome::Inactive => "inactive".into(),
            RowOutcome::Problem { kind } => {
                format!(
                    "problem:{}",
                    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                )
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedSite {
    pub domain: SiteDomain,
    /// The legacy addresses that named it.
    pub legacy_urls: Vec<String>,
    pub legacy_created_at: Option<String>,
    /// Its keys as signing secrets, oldest row first (never serialised).
    #[serde(skip)]
    pub secrets: Vec<SigningSecret>,
    /// The HMAC keys the legacy plugin signs with, to check each against the stored secrets.
    #[serde(skip)]
    pub legacy_keys: Vec<Vec<u8>>,
    pub key_count: usize,
    /// Rows whose raw key became a `whsec_` secret: the site's plugin needs the `whsec_` form
    /// (`whsec_` + base64 of the key), printed once, when the site is created.
    pub converted_key: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedDestination {
    /// The manifest's name for it (`DEST#<tenant>#<n>`, n from the URL), stable across re-runs.
    pub entry: String,
    pub url: String,
    /// The sites it serves; empty: all the tenant's sites.
    pub sites: Vec<SiteDomain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTenant {
    pub tenant_id: TenantId,
    pub owner: String,
    pub sites: Vec<PlannedSite>,
    pub destinations: Vec<PlannedDestination>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub migration_id: MigrationId,
    pub rows: usize,
    pub tenants: Vec<PlannedTenant>,
    pub problems: Vec<Problem>,
    #[serde(skip)]
    pub outcomes: Vec<RowOutcome>,
}

impl Plan {
    pub fn site_count(&self) -> usize {
        self.tenants.iter().map(|t| t.sites.len()).sum()
    }

    pub fn destination_count(&self) -> usize {
        self.tenants.iter().map(|t| t.destinations.len()).sum()
    }

    /// Counts of outcomes by label.
    pub fn outcome_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in &self.outcomes {
            *m.entry(o.label()).or_insert(0) += 1;
        }
        m
    }

    fn skip_row(&mut self, row: usize, kind: ProblemKind) {
        self.outcomes[row] = RowOutcome::Problem { kind };
    }
}

/// Options of a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The destination of tenants whose rows name none; `{tenant}` is replaced by the tenant id.
    pub default_destination_url: Option<String>,
}

fn problem(row: Option<usize>, url: &str, kind: ProblemKind, detail: impl Into<String>) -> Problem {
    Problem {
        row,
        site_url: url.chars().take(200).collect(),
        kind,
        severity: if kind.skips_row() { "skipped" } else { "warning" },
        detail: detail.into(),
    }
}

/// The domain a legacy address names: the host of a URL, or a bare host name.
pub fn legacy_domain(raw: &str) -> Result<SiteDomain, String> {
    let s = raw.trim();
    let host = if s.contains("://") {
        let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {} is not http or https", url.scheme()));
        }
        match url.host_str() {
            Some(h) if h.starts_with('[') || h.parse::<std::net::IpAddr>().is_ok() => {
                return Err("is an IP address; a site is registered by name".into())
            }
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err("names no host".into()),
        }
    } else {
        s.split('/').next().unwrap_or_default().to_owned()
    };
    let domain = crate::domain::normalize(&host).map_err(|e| e.to_string())?;
    // Checked on the normal form: a trailing dot, upper case or an IDNA mapping must not let a
    // local or single-label name through (`localhost.`, `shop.LOCAL`, `intranet.`).
    let d = domain.as_str();
    if d == "localhost" || d.ends_with(".localhost") || d.ends_with(".local") {
        return Err("is a local host name".into());
    }
    if !d.contains('.') {
        return Err("is not a public host name (no dot)".into());
    }
    Ok(domain)
}

/// The HMAC key a legacy key signs with, and the same key as a `whsec_` secret; `true` when the
/// key was raw and had to be converted.
pub fn legacy_secret(raw: &str) -> Result<(Vec<u8>, SigningSecret, bool), String> {
    let raw = raw.trim();
    if let Some(b64) = raw.strip_prefix("whsec_") {
        let secret = SigningSecret::parse(raw).map_err(|e| e.to_string())?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| e.to_string())?;
        return Ok((bytes, secret, false));
    }
    let bytes = raw.as_bytes();
    if bytes.len() < 24 {
        return Err(format!("a raw key of {} bytes is too short to keep (at least 24)", bytes.len()));
    }
    if bytes.len() > 64 {
        return Err(format!("a raw key of {} bytes is longer than a signing secret holds (64)", bytes.len()));
    }
    let secret = SigningSecret::parse(&format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
        .map_err(|e| e.to_string())?;
    Ok((bytes.to_vec(), secret, true))
}

/// `created_at` as the legacy table holds it, as RFC 3339.
pub fn legacy_time(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let rfc = time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &rfc) {
        return t.format(&rfc).map_err(|e| e.to_string());
    }
    let mysql = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    if let Ok(t) = time::PrimitiveDateTime::parse(s, &mysql) {
        return t.assume_utc().format(&rfc).map_err(|e| e.to_string());
    }
    if let Ok(secs) = s.parse::<i64>() {
        if let Ok(t) = OffsetDateTime::from_unix_timestamp(secs) {
            return t.format(&rfc).map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "{:?} is neither RFC 3339, YYYY-MM-DD HH:MM:SS nor epoch seconds",
        s.chars().take(40).collect::<String>()
    ))
}

/// The owner's identity: trimmed, case-folded, inner whitespace collapsed.
fn owner_key(owner: &str) -> String {
    owner.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// A tenant id from an owner's name: lower-case letters and digits, other runs become '-'.
pub fn tenant_slug(owner_key: &str) -> String {
    let mut out = String::new();
    for c in owner_key.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut s = out.trim_matches('-').to_owned();
    s.truncate(48);
    let s = s.trim_end_matches('-').to_owned();
    if s.is_empty() {
        format!("owner-{}", short_hash(owner_key))
    } else {
        s
    }
}

fn short_hash(s: &str) -> String {
    format!("{:08x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()) as u32)
}

fn status_active(s: Option<&str>) -> Result<bool, String> {
    match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "active" | "enabled" | "1" | "true") => Ok(true),
        Some("inactive" | "disabled" | "suspended" | "deleted" | "revoked" | "0" | "false") => Ok(false),
        Some(other) => Err(format!("status {:?} is not one we know", other.chars().take(40).collect::<String>())),
    }
}

struct Candidate {
    row: usize,
    url: String,
    domain: SiteDomain,
    owner: String,
    owner_key: String,
    key: Vec<u8>,
    secret: SigningSecret,
    converted: bool,
    created_at: Option<String>,
    webhook: Option<String>,
}

/// Turns legacy rows into tenants, sites and destinations, with every problem found. Pure.
pub fn plan(id: MigrationId, rows: &[LegacyRow], options: &PlanOptions) -> Plan {
    let mut plan = Plan {
        migration_id: id,
        rows: rows.len(),
        tenants: Vec::new(),
        problems: Vec::new(),
        outcomes: vec![RowOutcome::Inactive; rows.len()],
    };
    let mut candidates = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let url = r.site_url.clone().unwrap_or_default();
        let skip = |plan: &mut Plan, kind, detail: String| {
            plan.problems.push(problem(Some(i), &url, kind, detail));
            plan.skip_row(i, kind);
        };
        match status_active(r.status.as_deref()) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                skip(&mut plan, ProblemKind::UnknownStatus, e);
                continue;
            }
        }
        let domain = match r.site_url.as_deref().map(legacy_domain) {
            None => {
                skip(&mut plan, ProblemKind::BadUrl, "no site_url".into());
                continue;
            }
            Some(Err(e)) => {
                skip(&mut plan, ProblemKind::BadUrl, e);
                continue;
            }
            Some(Ok(d)) => d,
        };
        let owner = r.owner.as_deref().map(str::trim).unwrap_or_default();
        if owner.is_empty() {
            skip(&mut plan, ProblemKind::MissingOwner, "no owner: the site cannot be given a tenant".into());
            continue;
        }
        let (key, secret, converted) = match r.api_key.as_deref().map(str::trim) {
            None | Some("") => {
                skip(&mut plan, ProblemKind::MissingKey, "no api_key: the site could not sign".into());
                continue;
            }
            Some(k) => match legacy_secret(k) {
                Ok(x) => x,
                Err(e) => {
                    skip(&mut plan, ProblemKind::UnusableKey, e);
                    continue;
                }
            },
        };
        let created_at = match r.created_at.as_deref().map(legacy_time) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                plan.problems.push(problem(Some(i), &url, ProblemKind::BadCreatedAt, e));
                None
            }
        };
        let webhook = match r.webhook_url.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
            None => None,
            Some(w) => match check_url(w) {
                Ok(()) => Some(w.to_owned()),
                Err(e) => {
                    plan.problems.push(problem(
                        Some(i),
                        &url,
                        ProblemKind::BadWebhookUrl,
                        format!("{e}; no destination from this row"),
                    ));
                    None
                }
            },
        };
        candidates.push(Candidate {
            row: i,
            url: url.clone(),
            domain,
            owner: owner.to_owned(),
            owner_key: owner_key(owner),
            key,
            secret,
            converted,
            created_at,
            webhook,
        });
    }

    // A domain claimed by two owners is nobody's until the operator decides.
    let mut owners_of: BTreeMap<SiteDomain, BTreeSet<String>> = BTreeMap::new();
    for c in &candidates {
        owners_of.entry(c.domain.clone()).or_default().insert(c.owner_key.clone());
    }
    let contested: BTreeSet<SiteDomain> =
        owners_of.iter().filter(|(_, o)| o.len() > 1).map(|(d, _)| d.clone()).collect();
    let mut kept = Vec::new();
    for c in candidates {
        if contested.contains(&c.domain) {
            let owners =
                owners_of.get(&c.domain).map(|o| o.iter().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default();
            plan.problems.push(problem(
                Some(c.row),
                &c.url,
                ProblemKind::DuplicateDomain,
                format!("{} is claimed by different owners ({owners}); none of its rows is migrated", c.domain),
            ));
            plan.skip_row(c.row, ProblemKind::DuplicateDomain);
        } else {
            kept.push(c);
        }
    }

    // Tenant ids: one per owner; owners whose names make the same id get a suffix each.
    let mut by_owner: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for c in kept {
        by_owner.entry(c.owner_key.clone()).or_default().push(c);
    }
    let mut slug_owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in by_owner.keys() {
        slug_owners.entry(tenant_slug(k)).or_default().push(k.clone());
    }
    for (owner_key, mut rows_of) in by_owner {
        let slug = tenant_slug(&owner_key);
        let tenant_id = if slug_owners.get(&slug).is_some_and(|o| o.len() > 1) {
            let mut base = slug.clone();
            base.truncate(40);
            let id = format!("{}-{}", base.trim_end_matches('-'), short_hash(&owner_key));
            plan.problems.push(problem(
                None,
                &rows_of[0].url,
                ProblemKind::TenantIdDisambiguated,
                format!("owner {:?} shares the tenant id {slug} with another owner; it becomes {id}", rows_of[0].owner),
            ));
            id
        } else {
            slug
        };
        let tenant_id = TenantId::parse(&tenant_id).expect("a slug is a valid tenant id");
        rows_of.sort_by_key(|c| c.row);
        let mut sites: Vec<PlannedSite> = Vec::new();
        let mut webhooks: BTreeMap<String, BTreeSet<SiteDomain>> = BTreeMap::new();
        for c in &rows_of {
            if let Some(w) = &c.webhook {
                webhooks.entry(w.clone()).or_default().insert(c.domain.clone());
            }
            match sites.iter_mut().find(|s| s.domain == c.domain) {
                Some(s) => {
                    if !s.legacy_keys.contains(&c.key) {
                        s.legacy_keys.push(c.key.clone());
                        s.secrets.push(c.secret.clone());
                        s.key_count += 1;
                    }
                    s.converted_key |= c.converted;
                    if !s.legacy_urls.contains(&c.url) {
                        s.legacy_urls.push(c.url.clone());
                    }
                    plan.outcomes[c.row] = RowOutcome::Merged { domain: c.domain.clone(), tenant: tenant_id.clone() };
                }
                None => {
                    sites.push(PlannedSite {
                        domain: c.domain.clone(),
                        legacy_urls: vec![c.url.clone()],
                        legacy_created_at: c.created_at.clone(),
                        secrets: vec![c.secret.clone()],
                        legacy_keys: vec![c.key.clone()],
                        key_count: 1,
                        converted_key: c.converted,
                    });
                    plan.outcomes[c.row] = RowOutcome::Migrated { domain: c.domain.clone(), tenant: tenant_id.clone() };
                }
            }
        }
        let all: BTreeSet<SiteDomain> = sites.iter().map(|s| s.domain.clone()).collect();
        let mut destinations: Vec<PlannedDestination> = webhooks
            .into_iter()
            .map(|(url, served)| PlannedDestination {
                entry: destination_entry(&tenant_id, &url),
                sites: if served == all { Vec::new() } else { served.into_iter().collect() },
                url,
            })
            .collect();
        if destinations.is_empty() {
            match &options.default_destination_url {
                Some(u) => {
                    let url = u.replace("{tenant}", tenant_id.as_str());
                    destinations.push(PlannedDestination { entry: destination_entry(&tenant_id, &url), url, sites: Vec::new() });
                }
                None => plan.problems.push(problem(
                    None,
                    &rows_of[0].url,
                    ProblemKind::NoDestination,
                    format!("no webhook_url for any site of {tenant_id} and no --default-destination-url: it gets no destination"),
                )),
            }
        }
        plan.tenants.push(PlannedTenant { tenant_id, owner: rows_of[0].owner.clone(), sites, destinations });
    }
    plan
}

fn destination_entry(tenant: &TenantId, url: &str) -> String {
    format!("DEST#{tenant}#{:016x}", xxhash_rust::xxh3::xxh3_64(url.as_bytes()))
}

fn site_entry(d: &SiteDomain) -> String {
    format!("SITE#{d}")
}

fn tenant_entry(t: &TenantId) -> String {
    format!("TENANT#{t}")
}

/// A manifest entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestEntry {
    pub entry: String,
    pub kind: String,
    pub tenant_id: String,
    pub target_pk: String,
    pub target_sk: String,
    pub created_at: String,
}

fn manifest_item(
    id: &MigrationId,
    entry: &str,
    kind: &str,
    tenant: &TenantId,
    target: &ItemKey,
    created_at: &str,
) -> HashMap<String, AttributeValue> {
    let k = keys::migration_entry(id, entry);
    HashMap::from([
        (keys::PK.to_owned(), AttributeValue::S(k.pk)),
        (keys::SK.to_owned(), AttributeValue::S(k.sk)),
        (ENTRY_KIND.to_owned(), AttributeValue::S(kind.to_owned())),
        (ENTRY_TENANT.to_owned(), AttributeValue::S(tenant.to_string())),
        (ENTRY_PK.to_owned(), AttributeValue::S(target.pk.clone())),
        (ENTRY_SK.to_owned(), AttributeValue::S(target.sk.clone())),
        (ENTRY_CREATED_AT.to_owned(), AttributeValue::S(created_at.to_owned())),
    ])
}

/// The manifest of a migration: what it created (a Query of `MIGRATION#<id>`).
pub async fn manifest(store: &DataStore, id: &MigrationId) -> Result<Vec<ManifestEntry>, MigrationError> {
    let items = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(keys::migration_pk(id)))
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(dynamo)?;
    Ok(items
        .iter()
        .filter_map(|i| {
            let s = |n: &str| i.get(n).and_then(|v| v.as_s().ok()).cloned();
            Some(ManifestEntry {
                entry: s(keys::SK)?,
                kind: s(ENTRY_KIND)?,
                tenant_id: s(ENTRY_TENANT)?,
                target_pk: s(ENTRY_PK)?,
                target_sk: s(ENTRY_SK)?,
                created_at: s(ENTRY_CREATED_AT)?,
            })
        })
        .collect())
}

/// What the data table already holds for a plan: sites taken by others become problems (and
/// their rows are skipped); what this migration created before is marked so it is not redone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Existing {
    /// Manifest entries of this migration id already present.
    pub already_created: BTreeSet<String>,
    /// Tenants that exist without being from this migration.
    pub tenants_reused: BTreeSet<TenantId>,
}

pub async fn assess(store: &DataStore, plan: &mut Plan) -> Result<Existing, MigrationError> {
    let done: BTreeSet<String> = manifest(store, &plan.migration_id).await?.into_iter().map(|e| e.entry).collect();
    let domains: Vec<SiteDomain> = plan.tenants.iter().flat_map(|t| t.sites.iter().map(|s| s.domain.clone())).collect();
    let found = store.get_sites(&domains).await?;
    let mut existing = Existing { already_created: done.clone(), ..Default::default() };
    for t in &mut plan.tenants {
        if !done.contains(&tenant_entry(&t.tenant_id)) && store.get_tenant(&t.tenant_id).await?.is_some() {
            existing.tenants_reused.insert(t.tenant_id.clone());
            plan.problems.push(problem(
                None,
                &t.owner,
                ProblemKind::TenantExists,
                format!(
                    "tenant {} exists already (not from this migration): its sites join it, and a rollback keeps it",
                    t.tenant_id
                ),
            ));
        }
        let mut kept = Vec::new();
        for s in std::mem::take(&mut t.sites) {
            let theirs = found.iter().find(|r| r.domain == s.domain);
            match theirs {
                Some(r) if !(done.contains(&site_entry(&s.domain)) && r.tenant == t.tenant_id) => {
                    plan.problems.push(problem(
                        None,
                        &s.legacy_urls[0],
                        ProblemKind::DomainTaken,
                        format!("{} is registered already, to tenant {}, not by this migration", s.domain, r.tenant),
                    ));
                    for o in plan.outcomes.iter_mut() {
                        if matches!(o, RowOutcome::Migrated { domain, .. } | RowOutcome::Merged { domain, .. } if *domain == s.domain)
                        {
                            *o = RowOutcome::Problem { kind: ProblemKind::DomainTaken };
                        }
                    }
                    for d in &mut t.destinations {
                        if !d.sites.is_empty() {
                            d.sites.retain(|x| x != &s.domain);
                            // A destination whose every site was taken serves nothing.
                            if d.sites.is_empty() {
                                d.url.clear();
                            }
                        }
                    }
                }
                _ => kept.push(s),
            }
        }
        t.sites = kept;
        t.destinations.retain(|d| !d.url.is_empty());
    }
    // A tenant left with no site is not created (unless an earlier run did).
    plan.tenants.retain(|t| !t.sites.is_empty() || done.contains(&tenant_entry(&t.tenant_id)));
    Ok(existing)
}

/// A destination the migration created, with its signing secret (shown this once).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedDestination {
    pub tenant_id: TenantId,
    pub destination_id: crate::ids::DestinationId,
    pub url: String,
    pub sites: Vec<SiteDomain>,
    pub signing_secret: String,
}

/// A site whose legacy key was raw: the `whsec_` form its plugin is configured with (the same
/// key, shown this once).
#[derive(Debug, Clone, Serialize)]
pub struct ConvertedSecret {
    pub domain: SiteDomain,
    pub signing_secret: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub tenants_created: usize,
    pub tenants_already_created: usize,
    pub tenants_reused: usize,
    pub sites_created: usize,
    pub sites_already_created: usize,
    /// Sites another writer registered between the plan and the write: skipped.
    pub sites_taken: Vec<SiteDomain>,
    pub destinations_created: Vec<CreatedDestination>,
    pub destinations_already_created: usize,
    pub converted_secrets: Vec<ConvertedSecret>,
}

fn now_rfc3339(now: OffsetDateTime) -> String {
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn tag(item: &mut TransactWriteItem, id: &MigrationId) {
    if let Some(p) = item.put.as_mut() {
        p.item.insert(MIGRATION_ATTR.to_owned(), AttributeValue::S(id.to_string()));
    }
}

fn manifest_put(
    table: &str,
    id: &MigrationId,
    entry: &str,
    kind: &str,
    tenant: &TenantId,
    target: &ItemKey,
    created_at: &str,
) -> TransactWriteItem {
    tx_put(table, manifest_item(id, entry, kind, tenant, target, created_at), Some("attribute_not_exists(PK)"))
}

/// Writes what the plan (after [`assess`]) creates. Safe to re-run: every item is written with
/// its manifest entry under a condition, so what exists is left as it is.
pub async fn apply(
    store: &DataStore,
    keyring: &Keyring,
    plan: &Plan,
    existing: &Existing,
    now: OffsetDateTime,
) -> Result<ApplyReport, MigrationError> {
    let id = &plan.migration_id;
    let store = store.acting_as(&format!("migration:{id}"));
    let mut report = ApplyReport::default();
    let created_at = now_rfc3339(now);
    let now_ms = crate::site::ms(now);
    for t in &plan.tenants {
        // The tenant.
        let entry = tenant_entry(&t.tenant_id);
        if existing.already_created.contains(&entry) {
            report.tenants_already_created += 1;
        } else if existing.tenants_reused.contains(&t.tenant_id) {
            report.tenants_reused += 1;
        } else {
            let profile = TenantProfile {
                tenant_id: t.tenant_id.clone(),
                name: t.owner.clone(),
                created_at: created_at.clone(),
                retention_days: DEFAULT_RETENTION_DAYS,
                form_retention: BTreeMap::new(),
                shards: ShardHistory::new(1, now_ms).expect("one shard is valid"),
            };
            let mut put = tx_put(store.table(), profile.to_item(), Some("attribute_not_exists(PK)"));
            tag(&mut put, id);
            let audit = AuditEvent::by(
                store.actor(),
                &t.tenant_id,
                now,
                "tenant.created",
                serde_json::json!({ "migration": id, "owner": t.owner }),
            );
            let items = vec![
                put,
                manifest_put(
                    store.table(),
                    id,
                    &entry,
                    "tenant",
                    &t.tenant_id,
                    &keys::tenant_profile(&t.tenant_id),
                    &created_at,
                ),
                tx_put(store.table(), audit.to_item(), None),
            ];
            match store.transact(items).await {
                Ok(()) => report.tenants_created += 1,
                Err(e) => match failed_conditions(&e) {
                    Some(f) if f.contains(&1) => report.tenants_already_created += 1,
                    Some(f) if f.contains(&0) => report.tenants_reused += 1,
                    _ => return Err(StoreError::Dynamo(e).into()),
                },
            }
        }

        // Its sites, a transaction of up to 25 at a time; one by one when any is refused.
        let todo: Vec<&PlannedSite> =
            t.sites.iter().filter(|s| !existing.already_created.contains(&site_entry(&s.domain))).collect();
        report.sites_already_created += t.sites.len() - todo.len();
        for chunk in todo.chunks(SITES_PER_TRANSACTION) {
            let build = |s: &PlannedSite| -> Vec<TransactWriteItem> {
                let record = SiteRecord {
                    domain: s.domain.clone(),
                    tenant: t.tenant_id.clone(),
                    created_at: created_at.clone(),
                    secrets: s
                        .secrets
                        .iter()
                        .map(|secret| SiteSecret {
                            sealed: keyring.seal_secret(secret, &SiteRecord::owner(&s.domain)),
                            created_ms: now_ms,
                            expires_ms: None,
                        })
                        .collect(),
                    version: 1,
                };
                let mut put = tx_put(store.table(), record.to_item(), Some("attribute_not_exists(PK)"));
                tag(&mut put, id);
                vec![
                    put,
                    manifest_put(
                        store.table(),
                        id,
                        &site_entry(&s.domain),
                        "site",
                        &t.tenant_id,
                        &keys::site(&s.domain),
                        &created_at,
                    ),
                ]
            };
            let audit = |sites: &[&PlannedSite]| {
                let domains: Vec<&SiteDomain> = sites.iter().map(|s| &s.domain).collect();
                let a = AuditEvent::by(
                    store.actor(),
                    &t.tenant_id,
                    now,
                    "site.added",
                    serde_json::json!({ "migration": id, "domains": domains }),
                );
                tx_put(store.table(), a.to_item(), None)
            };
            let mut items: Vec<TransactWriteItem> = chunk.iter().flat_map(|s| build(s)).collect();
            items.push(audit(chunk));
            let created: Vec<&PlannedSite> = match store.transact(items).await {
                Ok(()) => chunk.to_vec(),
                Err(e) if failed_conditions(&e).is_some_and(|f| !f.is_empty()) => {
                    let mut one_by_one = Vec::new();
                    for s in chunk {
                        let mut items = build(s);
                        items.push(audit(&[s]));
                        match store.transact(items).await {
                            Ok(()) => one_by_one.push(*s),
                            Err(e) => match failed_conditions(&e) {
                                Some(f) if f.contains(&1) => report.sites_already_created += 1,
                                Some(f) if f.contains(&0) => report.sites_taken.push(s.domain.clone()),
                                _ => return Err(StoreError::Dynamo(e).into()),
                            },
                        }
                    }
                    one_by_one
                }
                Err(e) => return Err(StoreError::Dynamo(e).into()),
            };
            report.sites_created += created.len();
            for s in created.into_iter().filter(|s| s.converted_key) {
                for secret in &s.secrets {
                    report
                        .converted_secrets
                        .push(ConvertedSecret { domain: s.domain.clone(), signing_secret: secret.expose().to_owned() });
                }
            }
        }

        // Its default destinations.
        for d in &t.destinations {
            if existing.already_created.contains(&d.entry) {
                report.destinations_already_created += 1;
                continue;
            }
            let spec = DestinationSpec {
                name: "migrated webhook".into(),
                url: d.url.clone(),
                kind: DestinationKind::Webhook,
                forms: Vec::new(),
                timeout_ms: DEFAULT_TIMEOUT_MS,
                auth: None,
                policy: DeliveryPolicy::default(),
            };
            let (dest, secret, mut items) = store.new_destination_items(&t.tenant_id, &d.sites, &spec, keyring, now);
            tag(&mut items[1], id);
            items.push(manifest_put(
                store.table(),
                id,
                &d.entry,
                "destination",
                &t.tenant_id,
                &keys::destination(&t.tenant_id, &dest.id),
                &dest.created_at,
            ));
            match store.transact(items).await {
                Ok(()) => report.destinations_created.push(CreatedDestination {
                    tenant_id: t.tenant_id.clone(),
                    destination_id: dest.id,
                    url: d.url.clone(),
                    sites: d.sites.clone(),
                    signing_secret: secret.expose().to_owned(),
                }),
                Err(e) => match failed_conditions(&e) {
                    Some(f) if f.contains(&4) => report.destinations_already_created += 1,
                    _ => return Err(StoreError::Dynamo(e).into()),
                },
            }
        }
    }
    Ok(report)
}

/// The check after a migration: counts, every site resolvable to its tenant, every legacy key
/// signing a test message that the stored secrets verify.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntegrityReport {
    pub legacy_rows: usize,
    pub rows: BTreeMap<String, usize>,
    pub tenants_expected: usize,
    pub tenants_found: usize,
    pub sites_expected: usize,
    pub sites_resolvable: usize,
    pub legacy_keys: usize,
    pub legacy_keys_verified: usize,
    pub destinations_expected: usize,
    pub destinations_found: usize,
    pub failures: Vec<String>,
    pub ok: bool,
}

/// Signs a test message the way the legacy plugin would (its raw HMAC key) and checks it with
/// each of the stored, sealed secrets, as ingest does.
fn key_verifies(legacy_key: &[u8], stored: &[SigningSecret]) -> bool {
    let body = br#"{"migration_check":true}"#;
    let msg_id = "msg_migration_check";
    let ts = OffsetDateTime::now_utc().unix_timestamp();
    let Ok(signature) =
        standardwebhooks::Webhook::from_bytes(legacy_key.to_vec()).and_then(|w| w.sign(msg_id, ts, body))
    else {
        return false;
    };
    let mut headers = http::HeaderMap::new();
    let (Ok(id), Ok(t), Ok(sig)) = (msg_id.parse(), ts.to_string().parse(), signature.parse()) else {
        return false;
    };
    headers.insert("webhook-id", id);
    headers.insert("webhook-timestamp", t);
    headers.insert("webhook-signature", sig);
    stored.iter().any(|s| standardwebhooks::Webhook::new(s.expose()).is_ok_and(|w| w.verify(body, &headers).is_ok()))
}

pub async fn verify(store: &DataStore, keyring: &Keyring, plan: &Plan) -> Result<IntegrityReport, MigrationError> {
    let mut r = IntegrityReport { legacy_rows: plan.rows, rows: plan.outcome_counts(), ..Default::default() };
    for t in &plan.tenants {
        r.tenants_expected += 1;
        match store.get_tenant(&t.tenant_id).await? {
            Some(_) => r.tenants_found += 1,
            None => r.failures.push(format!("tenant {} is missing", t.tenant_id)),
        }
        for s in &t.sites {
            r.sites_expected += 1;
            r.legacy_keys += s.legacy_keys.len();
            let Some(site) = store.get_site(&s.domain, true).await? else {
                r.failures.push(format!("site {} does not resolve", s.domain));
                continue;
            };
            if site.tenant != t.tenant_id {
                r.failures.push(format!("site {} resolves to tenant {}, not {}", s.domain, site.tenant, t.tenant_id));
                continue;
            }
            r.sites_resolvable += 1;
            let owner = SiteRecord::owner(&s.domain);
            let opened: Vec<SigningSecret> = site
                .active_secrets(crate::site::ms(OffsetDateTime::now_utc()))
                .filter_map(|x| keyring.open_secret(&x.sealed, &owner).ok())
                .collect();
            for (i, k) in s.legacy_keys.iter().enumerate() {
                if key_verifies(k, &opened) {
                    r.legacy_keys_verified += 1;
                } else {
                    r.failures.push(format!(
                        "legacy key {} of site {} does not verify against its stored secrets",
                        i + 1,
                        s.domain
                    ));
                }
            }
        }
        let stored = store.list_destinations(&t.tenant_id).await?;
        for d in &t.destinations {
            r.destinations_expected += 1;
            if stored.iter().any(|x| x.url == d.url) {
                r.destinations_found += 1;
            } else {
                r.failures.push(format!("destination {} of tenant {} is missing", d.url, t.tenant_id));
            }
        }
    }
    r.ok = r.failures.is_empty();
    Ok(r)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RollbackReport {
    pub migration_id: String,
    pub removed: BTreeMap<String, usize>,
    /// Entries not removed, with why (changed since the migration, or still in use).
    pub kept: Vec<KeptEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeptEntry {
    pub entry: String,
    pub reason: String,
}

fn tx_delete(
    table: &str,
    key: &ItemKey,
    condition: Option<(&str, HashMap<String, AttributeValue>)>,
) -> TransactWriteItem {
    let mut d = Delete::builder()
        .table_name(table)
        .key(keys::PK, AttributeValue::S(key.pk.clone()))
        .key(keys::SK, AttributeValue::S(key.sk.clone()));
    if let Some((c, values)) = condition {
        d = d.condition_expression(c).set_expression_attribute_values(Some(values));
    }
    TransactWriteItem::builder().delete(d.build().expect("table and key are set")).build()
}

/// Removes what migration `id` created: destinations, then sites, then tenants, each only while
/// it is still the item the migration wrote (same `created_at`), and a tenant only once nothing
/// else of it remains (sites or destinations added since). Never touches anything else.
pub async fn rollback(
    store: &DataStore,
    id: &MigrationId,
    now: OffsetDateTime,
) -> Result<RollbackReport, MigrationError> {
    let store = store.acting_as(&format!("migration:{id}"));
    let mut entries = manifest(&store, id).await?;
    let rank = |k: &str| match k {
        "destination" => 0,
        "site" => 1,
        _ => 2,
    };
    entries.sort_by_key(|e| rank(&e.kind));
    let mut report = RollbackReport { migration_id: id.to_string(), ..Default::default() };
    for e in entries {
        let target = ItemKey { pk: e.target_pk.clone(), sk: e.target_sk.clone() };
        let entry_key = keys::migration_entry(id, &e.entry);
        let Ok(tenant) = TenantId::parse(&e.tenant_id) else {
            report.kept.push(KeptEntry { entry: e.entry, reason: "unreadable manifest entry".into() });
            continue;
        };
        if e.kind == "tenant" {
            let sites = store.list_sites(&tenant).await?;
            let dests = store.list_destinations(&tenant).await?;
            if !sites.is_empty() || !dests.is_empty() {
                report.kept.push(KeptEntry {
                    entry: e.entry,
                    reason: format!(
                        "tenant still has {} sites and {} destinations not from this migration",
                        sites.len(),
                        dests.len()
                    ),
                });
                continue;
            }
        }
        let mut values = HashMap::from([(":c".to_owned(), AttributeValue::S(e.created_at.clone()))]);
        let condition = match e.kind.as_str() {
            "site" => {
                values.insert(":t".to_owned(), AttributeValue::S(e.tenant_id.clone()));
                format!("{} = :c AND {} = :t", st::CREATED_AT, st::TENANT)
            }
            "tenant" => format!("{} = :c", tn::CREATED_AT),
            _ => format!("{} = :c", crate::attrs::destination::CREATED_AT),
        };
        let audit = AuditEvent::by(
            store.actor(),
            &tenant,
            now,
            "migration.rolled_back",
            serde_json::json!({ "migration": id, "removed": e.entry }),
        );
        let mut items = vec![
            tx_delete(store.table(), &target, Some((&condition, values))),
            tx_delete(store.table(), &entry_key, None),
            tx_put(store.table(), audit.to_item(), None),
        ];
        match e.kind.as_str() {
            "destination" => items.push(crate::destination::tx_bump_set(store.table(), &tenant)),
            "tenant" => items.push(tx_delete(store.table(), &keys::destination_set(&tenant), None)),
            _ => {}
        }
        match store.transact(items).await {
            Ok(()) => *report.removed.entry(e.kind).or_insert(0) += 1,
            Err(err) if failed_conditions(&err).is_some_and(|f| f.contains(&0)) => {
                // Gone, or replaced by something the migration did not write: not ours to remove.
                store.transact(vec![tx_delete(store.table(), &entry_key, None)]).await.map_err(StoreError::Dynamo)?;
                report.kept.push(KeptEntry {
                    entry: e.entry,
                    reason: "removed or replaced since the migration; left as it is".into(),
                });
            }
            Err(err) => return Err(StoreError::Dynamo(err).into()),
        }
    }
    Ok(report)
}

/// Creates a legacy table from JSON rows (the fixture in `schemas/fixtures/legacy-auth/`), to try
/// or test a migration: key `id` (a number, the row's position), strings and numbers as they are;
/// attributes starting with `_` (the fixture's expectations) are left out. Not used by the
/// migration, which only reads.
pub async fn create_fixture_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    rows: &[serde_json::Value],
) -> Result<usize, MigrationError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType, WriteRequest,
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .expect("set"),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().expect("set"))
        .send()
        .await;
    if let Err(e) = created {
        let e = aws_sdk_dynamodb::Error::from(e);
        if !matches!(e, aws_sdk_dynamodb::Error::ResourceInUseException(_)) {
            return Err(StoreError::Dynamo(e).into());
        }
    }
    let items: Vec<HashMap<String, AttributeValue>> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut item = HashMap::from([("id".to_owned(), AttributeValue::N((i + 1).to_string()))]);
            for (k, v) in row.as_object().into_iter().flatten().filter(|(k, _)| !k.starts_with('_')) {
                let value = match v {
                    serde_json::Value::String(s) => AttributeValue::S(s.clone()),
                    serde_json::Value::Number(n) => AttributeValue::N(n.to_string()),
                    serde_json::Value::Bool(b) => AttributeValue::Bool(*b),
                    _ => continue,
                };
                item.insert(k.clone(), value);
            }
            item
        })
        .collect();
    for chunk in items.chunks(25) {
        let mut left: Vec<WriteRequest> = chunk
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(i.clone())).build().expect("set"))
                    .build()
            })
            .collect();
        while !left.is_empty() {
            let out = client.batch_write_item().request_items(table, left).send().await.map_err(dynamo)?;
            left = out.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
        }
    }
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(url: &str, key: &str, owner: &str) -> LegacyRow {
        LegacyRow {
            site_url: Some(url.into()),
            api_key: Some(key.into()),
            owner: Some(owner.into()),
            ..Default::default()
        }
    }

    const KEY_A: &str = "abcdefghijklmnopqrstuvwxyz012345";
    const KEY_B: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

    #[test]
    fn legacy_addresses_become_domains_or_a_reason() {
        for (raw, want) in [
            ("https://www.Example.com/contact?x=1", "www.example.com"),
            ("http://shop.example.org:8080/", "shop.example.org"),
            ("blog.example.net/wp-admin", "blog.example.net"),
            ("https://bücher.example/", "xn--bcher-kva.example"),
        ] {
            assert_eq!(legacy_domain(raw).unwrap().as_str(), want, "{raw}");
        }
        for raw in [
            "",
            "ftp://x.example.org",
            "http://localhost",
            "https://10.0.0.1/",
            "https://[::1]/",
            "intranet",
            "https://a..b.org/",
            "https://",
        ] {
            assert!(legacy_domain(raw).is_err(), "{raw:?} accepted");
        }
    }

    /// Found by the `domain` fuzz target: the local and no-dot checks ran before normalisation,
    /// so a trailing dot, upper case or a full-width spelling slipped such names through.
    #[test]
    fn local_and_single_label_names_are_refused_in_any_spelling() {
        for raw in [
            "httpspe.",
            "intranet.",
            "http://intranet./",
            "localhost.",
            "http://localhost./wp",
            "LOCALHOST",
            "\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}",
            "shop.LOCAL",
            "shop.local.",
            "https://printer.local./",
            "app.Localhost",
        ] {
            assert!(legacy_domain(raw).is_err(), "{raw:?} accepted as {:?}", legacy_domain(raw));
        }
        assert_eq!(legacy_domain("Shop.Example.COM.").unwrap().as_str(), "shop.example.com");
    }

    #[test]
    fn a_raw_key_signs_exactly_as_its_whsec_form() {
        let (bytes, secret, converted) = legacy_secret(KEY_A).unwrap();
        assert!(converted);
        assert_eq!(bytes, KEY_A.as_bytes());
        let legacy =
            standardwebhooks::Webhook::from_bytes(KEY_A.as_bytes().to_vec()).unwrap().sign("m", 1, b"{}").unwrap();
        let ours = standardwebhooks::Webhook::new(secret.expose()).unwrap().sign("m", 1, b"{}").unwrap();
        assert_eq!(legacy, ours);
        let (_, same, converted) = legacy_secret(secret.expose()).unwrap();
        assert!(!converted);
        assert_eq!(same.expose(), secret.expose());
        assert!(legacy_secret("short").is_err());
        assert!(legacy_secret(&"x".repeat(65)).is_err());
        assert!(legacy_secret("whsec_???").is_err());
        assert!(key_verifies(KEY_A.as_bytes(), std::slice::from_ref(&secret)));
        assert!(!key_verifies(KEY_B.as_bytes(), &[secret]));
    }

    #[test]
    fn times_in_the_three_legacy_forms() {
        assert_eq!(legacy_time("2021-03-04 05:06:07").unwrap(), "2021-03-04T05:06:07Z");
        assert_eq!(legacy_time("2021-03-04T05:06:07+01:00").unwrap(), "2021-03-04T05:06:07+01:00");
        assert_eq!(legacy_time("1614834367").unwrap(), "2021-03-04T05:06:07Z");
        assert!(legacy_time("yesterday").is_err());
    }

    #[test]
    fn owners_are_tenants_and_collisions_are_told_apart() {
        assert_eq!(tenant_slug("acme agency"), "acme-agency");
        assert_eq!(tenant_slug("cedar & co"), "cedar-co");
        assert!(tenant_slug("!!!").starts_with("owner-"));
        assert!(TenantId::parse(&tenant_slug(&"long name ".repeat(20))).is_ok());
        let rows = vec![
            row("a.example.com", KEY_A, "Pine & Oak"),
            row("b.example.com", KEY_A, "Pine Oak"),
            row("c.example.com", KEY_A, "  PINE   oak "),
        ];
        let plan = plan(MigrationId::parse("m").unwrap(), &rows, &PlanOptions::default());
        assert_eq!(plan.tenants.len(), 2);
        let ids: BTreeSet<&str> = plan.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
        assert!(ids.iter().all(|i| i.starts_with("pine-oak-")), "{ids:?}");
        assert_eq!(plan.tenants.iter().map(|t| t.sites.len()).sum::<usize>(), 3);
        assert!(plan.problems.iter().any(|p| p.kind == ProblemKind::TenantIdDisambiguated));
    }

    #[test]
    fn duplicates_merge_within_an_owner_and_block_across_owners() {
        let rows = vec![
            row("https://one.example.com/", KEY_A, "Acme"),
            row("http://ONE.example.com/form", KEY_B, "acme"),
            row("one.example.com", KEY_A, "Acme"),
            row("two.example.com", KEY_A, "Acme"),
            row("two.example.com", KEY_B, "Other"),
        ];
        let plan = plan(MigrationId::parse("m").unwrap(), &rows, &PlanOptions::default());
        let labels: Vec<String> = plan.outcomes.iter().map(RowOutcome::label).collect();
        assert_eq!(labels, ["migrated", "merged", "merged", "problem:duplicate_domain", "problem:duplicate_domain"]);
        assert_eq!(plan.tenants.len(), 1);
        let site = &plan.tenants[0].sites[0];
        assert_eq!(site.key_count, 2, "the second key joins, the repeated one does not");
    }

    #[test]
    fn destinations_follow_the_webhooks_of_the_sites() {
        let mut a = row("a.example.com", KEY_A, "Acme");
        a.webhook_url = Some("https://hooks.example/a".into());
        let mut b = row("b.example.com", KEY_A, "Acme");
        b.webhook_url = Some("https://hooks.example/b".into());
        let mut c = row("c.example.com", KEY_A, "Solo");
        c.webhook_url = Some("https://hooks.example/c".into());
        let d = row("d.example.com", KEY_A, "Nobody");
        let options = PlanOptions { default_destination_url: Some("https://fallback.example/{tenant}".into()) };
        let plan = plan(MigrationId::parse("m").unwrap(), &[a, b, c, d], &options);
        let by: BTreeMap<&str, &PlannedTenant> = plan.tenants.iter().map(|t| (t.tenant_id.as_str(), t)).collect();
        assert_eq!(by["acme"].destinations.len(), 2);
        assert!(by["acme"].destinations.iter().all(|d| d.sites.len() == 1));
        assert!(by["solo"].destinations[0].sites.is_empty(), "one webhook for every site serves all, later ones too");
        assert_eq!(by["nobody"].destinations[0].url, "https://fallback.example/nobody");
        // The manifest name of a destination is stable across runs.
        let again = super::plan(
            MigrationId::parse("m").unwrap(),
            &[row("a.example.com", KEY_A, "Acme")],
            &PlanOptions::default(),
        );
        assert!(again.tenants[0].destinations.is_empty());
        assert_eq!(
            destination_entry(&TenantId::parse("acme").unwrap(), "https://hooks.example/a"),
            by["acme"].destinations[0].entry
        );
    }

    #[test]
    fn statuses_and_missing_fields() {
        let mut inactive = row("a.example.com", KEY_A, "Acme");
        inactive.status = Some("Suspended".into());
        let mut odd = row("b.example.com", KEY_A, "Acme");
        odd.status = Some("pending".into());
        let no_owner =
            LegacyRow { site_url: Some("c.example.com".into()), api_key: Some(KEY_A.into()), ..Default::default() };
        let no_key =
            LegacyRow { site_url: Some("d.example.com".into()), owner: Some("Acme".into()), ..Default::default() };
        let plan = plan(MigrationId::parse("m").unwrap(), &[inactive, odd, no_owner, no_key], &PlanOptions::default());
        let labels: Vec<String> = plan.outcomes.iter().map(RowOutcome::label).collect();
        assert_eq!(labels, ["inactive", "problem:unknown_status", "problem:missing_owner", "problem:missing_key"]);
        assert!(plan.tenants.is_empty());
        assert!(plan.problems.iter().all(|p| p.severity == "skipped"));
    }
}
