//! Every partition key, sort key and GSI key string of `FormBridgeData` and the control table is
//! built here and nowhere else. Builders take typed ids only, so a key for tenant A can never be
//! formatted from tenant B's input, and no caller can reach a tenant partition without a
//! `TenantId`. The README's data-model table mirrors this module.

use time::{Date, OffsetDateTime};

use crate::ids::{DestinationId, MigrationId, SiteDomain, SubmissionId, TenantId};

pub const PK: &str = "PK";
pub const SK: &str = "SK";
pub const GSI1PK: &str = "GSI1PK";
pub const GSI1SK: &str = "GSI1SK";
pub const GSI2PK: &str = "GSI2PK";
pub const GSI2SK: &str = "GSI2SK";
pub const GSI3PK: &str = "GSI3PK";
pub const GSI3SK: &str = "GSI3SK";
/// The TTL attribute of both tables (epoch seconds).
pub const TTL: &str = "ttl";

/// A primary key: partition key plus sort key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

/// A secondary-index key pair, for the index named by `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    pub index: &'static str,
    pub pk: String,
    pub sk: String,
}

fn key(pk: String, sk: String) -> ItemKey {
    ItemKey { pk, sk }
}

// ---- tenants -------------------------------------------------------------------------------

pub fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

/// The tenant's profile: name, shard history, retention.
pub fn tenant_profile(tenant: &TenantId) -> ItemKey {
    key(tenant_pk(tenant), "PROFILE".into())
}

/// GSI1 "directory": every tenant, for the admin list.
pub fn tenant_directory(tenant: &TenantId) -> IndexKey {
    IndexKey { index: "GSI1", pk: "TENANTS".into(), sk: format!("TENANT#{tenant}") }
}
pub const TENANT_DIRECTORY_PK: &str = "TENANTS";

// ---- sites (domain reverse lookup) -----------------------------------------------------------

/// One item per registered domain, fetched by the ingest endpoint with a single GetItem.
pub fn site(domain: &SiteDomain) -> ItemKey {
    key(format!("SITE#{domain}"), "SITE".into())
}

/// GSI2 (keys only): the domains of one tenant.
pub fn site_by_tenant(tenant: &TenantId, domain: &SiteDomain) -> IndexKey {
    IndexKey { index: "GSI2", pk: tenant_sites_pk(tenant), sk: format!("SITE#{domain}") }
}
pub fn tenant_sites_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}#SITES")
}

// ---- submissions, deliveries, attempts -----------------------------------------------------

/// A write shard's partition. Zero-padded so shards sort in the console.
pub fn submission_pk(tenant: &TenantId, shard: u16) -> String {
    format!("SUB#{tenant}#{shard:03}")
}

pub fn submission_sk(id: &SubmissionId) -> String {
    format!("SUB#{id}")
}

pub fn submission(tenant: &TenantId, shard: u16, id: &SubmissionId) -> ItemKey {
    key(submission_pk(tenant, shard), submission_sk(id))
}

/// Prefix that, within a shard partition, selects a submission and its whole delivery history.
pub fn submission_family_prefix(id: &SubmissionId) -> String {
    format!("SUB#{id}")
}

pub fn delivery(tenant: &TenantId, shard: u16, id: &SubmissionId, dest: &DestinationId) -> ItemKey {
    key(submission_pk(tenant, shard), format!("SUB#{id}#DLV#{dest}"))
}

pub fn delivery_attempt(
    tenant: &TenantId,
    shard: u16,
    id: &SubmissionId,
    dest: &DestinationId,
    attempt: u16,
) -> ItemKey {
    key(submission_pk(tenant, shard), format!("SUB#{id}#DLV#{dest}#ATT#{attempt:04}"))
}

/// GSI1 (sparse): deliveries of a tenant that still need attention, by status and due time.
/// Set while a delivery is pending, retrying or failed; removed when it succeeds.
pub fn delivery_worklist(
    tenant: &TenantId,
    status: &str,
    next_attempt_ms: u64,
    id: &SubmissionId,
    dest: &DestinationId,
) -> IndexKey {
    IndexKey { index: "GSI1", pk: format!("DLV#{tenant}#{status}"), sk: format!("{next_attempt_ms:013}#{id}#{dest}") }
}

// ---- destinations --------------------------------------------------------------------------

pub fn destination(tenant: &TenantId, dest: &DestinationId) -> ItemKey {
    key(tenant_pk(tenant), format!("DEST#{dest}"))
}
pub const DESTINATION_SK_PREFIX: &str = "DEST#";

/// A destination's health (consecutive failures, breaker state), beside it in the tenant's
/// partition but outside the `DEST#` prefix, so listing destinations does not read it.
pub fn destination_health(tenant: &TenantId, dest: &DestinationId) -> ItemKey {
    key(tenant_pk(tenant), format!("HEALTH#{dest}"))
}
pub const HEALTH_SK_PREFIX: &str = "HEALTH#";

/// A tenant's destination-set version: bumped in the same transaction as every change to its
/// destinations, so a reader can tell with one batched read whether a cached list is current.
pub fn destination_set(tenant: &TenantId) -> ItemKey {
    key(tenant_pk(tenant), DESTINATION_SET_SK.to_owned())
}
pub const DESTINATION_SET_SK: &str = "DESTSET";

// ---- metrics -------------------------------------------------------------------------------

pub fn metrics_pk(tenant: &TenantId) -> String {
    format!("METRIC#{tenant}")
}

fn hour_label(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{}T{:02}", at.date(), at.hour())
}

/// Hourly bucket for the whole tenant (UTC).
pub fn hourly_metrics(tenant: &TenantId, at: OffsetDateTime) -> ItemKey {
    key(metrics_pk(tenant), format!("HOUR#{}", hour_label(at)))
}

/// Daily bucket for the whole tenant (UTC).
pub fn daily_metrics(tenant: &TenantId, day: Date) -> ItemKey {
    key(metrics_pk(tenant), format!("DAY#{day}"))
}

/// GSI3 (INCLUDE submission_count, form_stats): every tenant's total for one day, so an
/// operator dashboard reads many tenants' days without touching submissions.
pub fn daily_metrics_by_day(tenant: &TenantId, day: Date) -> IndexKey {
    IndexKey { index: "GSI3", pk: format!("DAY#{day}"), sk: format!("TENANT#{tenant}") }
}

// ---- costs ---------------------------------------------------------------------------------

/// What a tenant cost in one hour (UTC): billed units by line, in thousandths (see
/// [`crate::costs`]). In the tenant's metric partition, beside its metrics.
pub fn tenant_cost_hour(tenant: &TenantId, at: OffsetDateTime) -> ItemKey {
    key(metrics_pk(tenant), format!("{COST_HOUR_PREFIX}{}", hour_label(at)))
}
pub const COST_HOUR_PREFIX: &str = "COST#H#";

/// What a tenant cost in one day (UTC).
pub fn tenant_cost_day(tenant: &TenantId, day: Date) -> ItemKey {
    key(metrics_pk(tenant), format!("{COST_DAY_PREFIX}{day}"))
}
pub const COST_DAY_PREFIX: &str = "COST#D#";

/// What the whole system cost in one hour or day, tenants' units and the unattributed ones
/// (idle polling, leases) together.
pub fn system_cost_hour(at: OffsetDateTime) -> ItemKey {
    key(SYSTEM_COST_PK.into(), format!("{COST_HOUR_PREFIX}{}", hour_label(at)))
}
pub fn system_cost_day(day: Date) -> ItemKey {
    key(SYSTEM_COST_PK.into(), format!("{COST_DAY_PREFIX}{day}"))
}
pub const SYSTEM_COST_PK: &str = "COSTS";

/// A cost threshold crossed by a tenant (or, with `None`, the whole system) in a month: written
/// once, under a condition, by whichever aggregator sees it first. `kind` is `month_to_date` or
/// `projected`; the threshold is in cents.
pub fn cost_alert(tenant: Option<&TenantId>, month: &str, kind: &str, threshold_cents: u64) -> ItemKey {
    let pk = tenant.map_or_else(|| SYSTEM_COST_PK.to_owned(), metrics_pk);
    key(pk, format!("ALERT#{month}#{kind}#{threshold_cents}"))
}

/// The tenant whose partition a key is in, when it is in one: `TENANT#t`, `SUB#t#s`, `METRIC#t`,
/// `AUDIT#t#m`, and the index keys `DLV#t#<status>` and `TENANT#t#SITES`. Sites, API keys,
/// sessions, leases and other shared items name no tenant in their key.
pub fn tenant_of(pk: &str) -> Option<TenantId> {
    let mut p = pk.splitn(3, '#');
    match (p.next()?, p.next()) {
        ("TENANT" | "SUB" | "METRIC" | "AUDIT" | "DLV", Some(t)) => TenantId::parse(t).ok(),
        _ => None,
    }
}

// ---- audit ---------------------------------------------------------------------------------

/// Audit events, one partition per tenant and month so no partition grows without bound.
pub fn audit_event(tenant: &TenantId, at: OffsetDateTime, event: ulid::Ulid) -> ItemKey {
    let at = at.to_offset(time::UtcOffset::UTC);
    key(format!("AUDIT#{tenant}#{:04}-{:02}", at.year(), u8::from(at.month())), format!("EVT#{event}"))
}

/// Authentication failures against a tenant's site, one counter item per site and minute, so a
/// flood of forged requests costs at most one write per site per minute.
pub fn auth_failures(tenant: &TenantId, domain: &SiteDomain, minute: OffsetDateTime) -> ItemKey {
    let m = minute.to_offset(time::UtcOffset::UTC);
    key(
        format!("AUDIT#{tenant}#{:04}-{:02}", m.year(), u8::from(m.month())),
        format!("AUTHFAIL#{}T{:02}:{:02}#{domain}", m.date(), m.hour(), m.minute()),
    )
}

/// Authentication failures for domains that are not registered (no tenant to file them under),
/// aggregated per minute in one daily partition. The domain is kept only if it normalises.
pub fn unknown_site_failures(domain: Option<&SiteDomain>, minute: OffsetDateTime) -> ItemKey {
    let m = minute.to_offset(time::UtcOffset::UTC);
    let d = domain.map_or("-", SiteDomain::as_str);
    key(format!("SECURITY#{}", m.date()), format!("AUTHFAIL#{}T{:02}:{:02}#{d}", m.date(), m.hour(), m.minute()))
}

// ---- API keys ------------------------------------------------------------------------------

/// A tenant API key, found by its keyed hash: authenticating a request is one GetItem. (Not a
/// stream entity: `Entity::classify` calls it `Unknown`, and no consumer acts on it.)
pub fn api_key(hash: &str) -> ItemKey {
    key(format!("APIKEY#{hash}"), "APIKEY".to_owned())
}

/// A tenant's listing of an API key that covers it (the key's id and hash, never the key).
pub fn tenant_api_key(tenant: &TenantId, id: &ulid::Ulid) -> ItemKey {
    key(tenant_pk(tenant), format!("{TENANT_API_KEY_SK_PREFIX}{id}"))
}

pub const TENANT_API_KEY_SK_PREFIX: &str = "APIKEY#";

// ---- dashboard sign-in ---------------------------------------------------------------------

/// A one-time portal sign-in token, found by its keyed hash (`Unknown` to stream consumers).
pub fn portal_token(hash: &str) -> ItemKey {
    key(format!("PORTAL#{hash}"), "PORTAL".to_owned())
}

/// A dashboard session, found by the keyed hash of its cookie (`Unknown` to stream consumers).
pub fn session(hash: &str) -> ItemKey {
    key(format!("SESSION#{hash}"), "SESSION".to_owned())
}

// ---- control table -------------------------------------------------------------------------

/// The manifest of a migration: one item per tenant, site or destination it created.
pub fn migration_pk(id: &MigrationId) -> String {
    format!("MIGRATION#{id}")
}

/// A manifest entry: `what` is the created item's own key (`TENANT#<t>`, `SITE#<domain>`,
/// `DEST#<t>#<n>`), so a re-run finds it already created.
pub fn migration_entry(id: &MigrationId, what: &str) -> ItemKey {
    ItemKey { pk: migration_pk(id), sk: what.to_owned() }
}

/// A stream-shard lease of one consumer group (control table).
pub fn lease(group: &str, shard_id: &str) -> ItemKey {
    key(format!("LEASE#{group}"), format!("SHARD#{shard_id}"))
}

// ---- reading keys back ---------------------------------------------------------------------

/// What a `FormBridgeData` key addresses. Stream consumers use this to route records and to
/// ignore their own output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    TenantProfile {
        tenant: TenantId,
    },
    Site {
        domain: SiteDomain,
    },
    Submission {
        tenant: TenantId,
        shard: u16,
        id: SubmissionId,
    },
    Delivery {
        tenant: TenantId,
        shard: u16,
        id: SubmissionId,
        dest: DestinationId,
    },
    DeliveryAttempt {
        tenant: TenantId,
        shard: u16,
        id: SubmissionId,
        dest: DestinationId,
        attempt: u16,
    },
    Destination {
        tenant: TenantId,
        dest: DestinationId,
    },
    DestinationHealth {
        tenant: TenantId,
        dest: DestinationId,
    },
    DestinationSet {
        tenant: TenantId,
    },
    Metrics {
        tenant: TenantId,
        bucket: String,
    },
    Audit {
        tenant: TenantId,
    },
    /// Security counters not tied to a tenant (failures against unknown sites).
    Security,
    Unknown,
}

impl Entity {
    /// Classifies a primary key. Anything that does not parse strictly is `Unknown`.
    pub fn classify(pk: &str, sk: &str) -> Entity {
        Self::try_classify(pk, sk).unwrap_or(Entity::Unknown)
    }

    fn try_classify(pk: &str, sk: &str) -> Option<Entity> {
        let mut p = pk.split('#');
        match (p.next()?, p.next(), p.next(), p.next()) {
            ("TENANT", Some(t), None, None) => {
                let tenant = TenantId::parse(t).ok()?;
                if sk == "PROFILE" {
                    Some(Entity::TenantProfile { tenant })
                } else if sk == DESTINATION_SET_SK {
                    Some(Entity::DestinationSet { tenant })
                } else if let Some(d) = sk.strip_prefix(HEALTH_SK_PREFIX) {
                    Some(Entity::DestinationHealth { tenant, dest: DestinationId::parse(d).ok()? })
                } else {
                    let dest = DestinationId::parse(sk.strip_prefix(DESTINATION_SK_PREFIX)?).ok()?;
                    Some(Entity::Destination { tenant, dest })
                }
            }
            ("SITE", Some(d), None, None) if sk == "SITE" => Some(Entity::Site { domain: SiteDomain::parse(d).ok()? }),
            ("SUB", Some(t), Some(shard), None) => {
                let tenant = TenantId::parse(t).ok()?;
                if shard.len() != 3 {
                    return None;
                }
                let shard: u16 = shard.parse().ok()?;
                let mut s = sk.split('#');
                let (tag, id) = (s.next()?, s.next()?);
                if tag != "SUB" {
                    return None;
                }
                let id = SubmissionId::parse(id).ok()?;
                match (s.next(), s.next(), s.next(), s.next(), s.next()) {
                    (None, ..) => Some(Entity::Submission { tenant, shard, id }),
                    (Some("DLV"), Some(d), None, ..) => {
                        Some(Entity::Delivery { tenant, shard, id, dest: DestinationId::parse(d).ok()? })
                    }
                    (Some("DLV"), Some(d), Some("ATT"), Some(n), None) if n.len() == 4 => {
                        Some(Entity::DeliveryAttempt {
                            tenant,
                            shard,
                            id,
                            dest: DestinationId::parse(d).ok()?,
                            attempt: n.parse().ok()?,
                        })
                    }
                    _ => None,
                }
            }
            ("METRIC", Some(t), None, None) => {
                Some(Entity::Metrics { tenant: TenantId::parse(t).ok()?, bucket: sk.to_owned() })
            }
            ("AUDIT", Some(t), Some(_month), None) => Some(Entity::Audit { tenant: TenantId::parse(t).ok()? }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let id = SubmissionId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let k = submission(&t("acme"), 7, &id);
        assert_eq!(k.pk, "SUB#acme#007");
        assert_eq!(k.sk, "SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV");
        let at = datetime!(2026-11-25 08:30 UTC);
        assert_eq!(hourly_metrics(&t("acme"), at).sk, "HOUR#2026-11-25T08");
        assert_eq!(daily_metrics(&t("acme"), at.date()).sk, "DAY#2026-11-25");
        assert_eq!(audit_event(&t("acme"), at, ulid::Ulid(1)).pk, "AUDIT#acme#2026-11");
    }

    #[test]
    fn a_tenant_prefix_cannot_reach_another_tenants_partition() {
        // "acme" is a prefix of "acme-b": partitions must still never overlap, and a query on
        // acme's shard 1 must not match acme-b's items through begins_with on the sort key.
        let a = submission_pk(&t("acme"), 1);
        let b = submission_pk(&t("acme-b"), 1);
        assert_ne!(a, b);
        assert!(!b.starts_with(&format!("{a}#")));
        assert_ne!(tenant_pk(&t("acme")), tenant_pk(&t("acme-b")));
    }

    #[test]
    fn classify_rejects_forged_keys() {
        assert_eq!(Entity::classify("SUB#a#b#001", "SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV"), Entity::Unknown);
        assert_eq!(Entity::classify("SUB#acme#1", "SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV"), Entity::Unknown);
        assert_eq!(Entity::classify("TENANT#ACME", "PROFILE"), Entity::Unknown);
        let t = TenantId::parse("acme").unwrap();
        let k = destination_set(&t);
        assert_eq!(Entity::classify(&k.pk, &k.sk), Entity::DestinationSet { tenant: t });
        assert_eq!(Entity::classify("SUB#acme#001", "SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV#X"), Entity::Unknown);
    }

    proptest! {
        #[test]
        fn submission_keys_round_trip(tenant in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", shard in 0u16..1000, n in any::<u128>()) {
            let tenant = t(&tenant);
            let id = SubmissionId::from_ulid(ulid::Ulid(n));
            let k = submission(&tenant, shard, &id);
            prop_assert_eq!(Entity::classify(&k.pk, &k.sk), Entity::Submission { tenant: tenant.clone(), shard, id });
            let dest = DestinationId::from_ulid(ulid::Ulid(n.rotate_left(7)));
            let d = delivery_attempt(&tenant, shard, &id, &dest, 3);
            prop_assert_eq!(Entity::classify(&d.pk, &d.sk), Entity::DeliveryAttempt { tenant: tenant.clone(), shard, id, dest, attempt: 3 });
            let h = destination_health(&tenant, &dest);
            prop_assert_eq!(Entity::classify(&h.pk, &h.sk), Entity::DestinationHealth { tenant: tenant.clone(), dest });
            let k = destination(&tenant, &dest);
            prop_assert_eq!(Entity::classify(&k.pk, &k.sk), Entity::Destination { tenant, dest });
        }

        #[test]
        fn keys_of_different_tenants_never_collide(a in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", b in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", shard in 0u16..100) {
            prop_assume!(a != b);
            let (ta, tb) = (t(&a), t(&b));
            prop_assert_ne!(submission_pk(&ta, shard), submission_pk(&tb, shard));
            prop_assert_ne!(tenant_pk(&ta), tenant_pk(&tb));
            prop_assert_ne!(metrics_pk(&ta), metrics_pk(&tb));
            prop_assert_ne!(tenant_sites_pk(&ta), tenant_sites_pk(&tb));
        }
    }
}
