//! Reads for one tenant under a role that can reach only that tenant's partitions.
//!
//! With `API_TENANT_READ_ROLE_ARN` set, the API reads a tenant's submissions, deliveries,
//! metrics and exports with credentials of that role (`ApiTenantReadRole` in
//! `deploy/aws/formbridge.yaml`), assumed with the session tag `tenant=<id>`. The role's policy
//! allows GetItem, BatchGetItem and Query only where `dynamodb:LeadingKeys` is one of that
//! tenant's partition keys, so a bug that built another tenant's key (or a forged cursor that
//! slipped through) is refused by IAM, not only by our checks. Writes (destinations, replays,
//! erasure, retention) and the agency view across tenants keep the API's own role.
//!
//! Credentials are assumed once per tenant and refreshed by the SDK before they expire; the
//! per-tenant clients are cached (at most `MAX_TENANTS`, idle ones dropped after an hour).
//! Without the setting, the API's own clients read (the local engine, and deployments that do
//! not want the extra STS call on a tenant's first read).

use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use formbridge_shared::aws::AwsClients;
use formbridge_shared::store::DataStore;
use formbridge_shared::TenantId;
use moka::future::Cache;

/// What the tenant-scoped clients are metered as: their operations are checked against
/// `ApiTenantReadRole`, as the API's are against `ApiRole`.
pub const COMPONENT: &str = "api-tenant-read";

const MAX_TENANTS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct TenantReaders {
    aws: AwsClients,
    table: String,
    role_arn: Option<String>,
    cache: Cache<TenantId, DataStore>,
}

impl TenantReaders {
    pub fn new(aws: AwsClients, table: String, role_arn: Option<String>) -> Self {
        let cache = Cache::builder().max_capacity(MAX_TENANTS).time_to_idle(Duration::from_secs(3600)).build();
        Self { aws, table, role_arn, cache }
    }

    /// The store to read `tenant`'s data with: the scoped one when a role is configured, else
    /// `own` (the API's).
    pub async fn store(&self, tenant: &TenantId, own: &DataStore) -> DataStore {
        let Some(arn) = &self.role_arn else { return own.clone() };
        self.cache
            .get_with_by_ref(tenant, async {
                let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                    .session_name(format!("formbridge-api-{tenant}"))
                    .tags([("tenant", tenant.as_str())])
                    .configure(self.aws.sdk_config())
                    .build()
                    .await;
                let clients = self.aws.with_credentials(SharedCredentialsProvider::new(provider), COMPONENT);
                DataStore::new(clients.dynamodb, self.table.clone())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use formbridge_shared::keys;
    use formbridge_shared::testing::{leading_key_patterns, string_like};
    use formbridge_shared::{DestinationId, SubmissionId, TenantId};

    /// Every partition key the API reads for a tenant, built by the key functions themselves.
    fn partitions(tenant: &str) -> Vec<String> {
        let t = TenantId::parse(tenant).unwrap();
        let (id, dest) = (SubmissionId::new(), DestinationId::new());
        let now = time::OffsetDateTime::now_utc();
        let mut out = vec![
            keys::tenant_profile(&t).pk,
            keys::destination(&t, &dest).pk,
            keys::destination_health(&t, &dest).pk,
            keys::destination_set(&t).pk,
            keys::tenant_sites_pk(&t),
            keys::metrics_pk(&t),
            keys::audit_event(&t, now, ulid::Ulid::new()).pk,
        ];
        for shard in [0, 7, 255] {
            out.push(keys::submission(&t, shard, &id).pk);
        }
        for status in ["pending", "retrying", "failed"] {
            out.push(keys::delivery_worklist(&t, status, 0, &id, &dest).pk);
        }
        out
    }

    #[test]
    fn the_read_role_reaches_every_partition_of_its_tenant_and_none_of_another() {
        let patterns = leading_key_patterns("ApiTenantReadRole", "acme");
        assert!(!patterns.is_empty(), "ApiTenantReadRole has LeadingKeys patterns");
        let allowed = |pk: &str| patterns.iter().any(|p| string_like(p, pk));
        for pk in partitions("acme") {
            assert!(allowed(&pk), "acme's reader cannot read its own {pk}: {patterns:?}");
        }
        for other in ["acme2", "acm", "acme-x", "other"] {
            for pk in partitions(other) {
                assert!(!allowed(&pk), "acme's reader can read {other}'s {pk}");
            }
        }
        assert!(string_like("a*c?", "abbcd") && !string_like("a*c?", "abbc") && string_like("*", ""));
    }
}
