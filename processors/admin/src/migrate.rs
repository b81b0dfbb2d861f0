//! `formbridge-admin migrate` and `legacy-fixture`: the move from a legacy WordPress
//! authentication table (see `formbridge_shared::legacy`).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use time::OffsetDateTime;

use formbridge_shared::aws::AwsClients;
use formbridge_shared::legacy::{self, PlanOptions};
use formbridge_shared::secrets::KeyringArgs;
use formbridge_shared::store::DataStore;
use formbridge_shared::MigrationId;

/// The migration id when none is given: the legacy table's name as a slug.
pub fn default_id(table: &str) -> Result<MigrationId> {
    MigrationId::parse(&legacy::tenant_slug(&table.to_lowercase()))
        .context("--id (none given, and the table name makes none)")
}

pub async fn migrate(
    aws: &AwsClients,
    store: &DataStore,
    keyring: &KeyringArgs,
    from_table: &str,
    id: Option<MigrationId>,
    dry_run: bool,
    default_destination_url: Option<String>,
) -> Result<Value> {
    let id = match id {
        Some(id) => id,
        None => default_id(from_table)?,
    };
    if let Some(u) = &default_destination_url {
        formbridge_shared::destination::check_url(&u.replace("{tenant}", "t")).context("--default-destination-url")?;
    }
    let rows =
        legacy::read_legacy(&aws.dynamodb, from_table).await.with_context(|| format!("--from-table {from_table}"))?;
    let mut plan = legacy::plan(id, &rows, &PlanOptions { default_destination_url });
    let existing = legacy::assess(store, &mut plan).await?;
    let summary = json!({
        "migration_id": plan.migration_id,
        "legacy_table": from_table,
        "legacy_rows": plan.rows,
        "rows": plan.outcome_counts(),
        "tenants": plan.tenants.len(),
        "sites": plan.site_count(),
        "destinations": plan.destination_count(),
        "problems": plan.problems.len(),
        "already_created": existing.already_created.len(),
    });
    if dry_run {
        return Ok(json!({
            "dry_run": true,
            "summary": summary,
            "would_create": plan.tenants,
            "problems": plan.problems,
            "note": "nothing was written; run again without --dry-run to migrate",
        }));
    }
    let keyring = keyring.load()?;
    let applied = legacy::apply(store, &keyring, &plan, &existing, OffsetDateTime::now_utc()).await?;
    let integrity = legacy::verify(store, &keyring, &plan).await?;
    let out = json!({
        "dry_run": false,
        "summary": summary,
        "applied": applied,
        "integrity": integrity,
        "problems": plan.problems,
        "rollback": format!("formbridge-admin migrate --rollback {}", plan.migration_id),
        "note": "signing secrets (destinations', and the whsec_ form of raw legacy keys) are shown only now",
    });
    if !integrity.ok {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        bail!("the integrity check failed: {} problems (listed under integrity.failures)", integrity.failures.len());
    }
    Ok(out)
}

pub async fn rollback(store: &DataStore, id: &MigrationId) -> Result<Value> {
    Ok(serde_json::to_value(legacy::rollback(store, id, OffsetDateTime::now_utc()).await?)?)
}

pub async fn fixture(aws: &AwsClients, table: &str, file: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("--file {}", file.display()))?;
    let rows: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("--file {}: not a JSON array of rows", file.display()))?;
    let n =
        legacy::create_fixture_table(&aws.dynamodb, table, &rows).await.with_context(|| format!("--table {table}"))?;
    Ok(json!({ "table": table, "rows": n }))
}
