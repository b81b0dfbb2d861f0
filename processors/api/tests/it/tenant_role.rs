//! With `API_TENANT_READ_ROLE_ARN` set, a tenant's reads go through credentials of the
//! tenant-scoped role (assumed with the session tag), and everything they call is allowed by
//! `ApiTenantReadRole` in the template. The role's LeadingKeys patterns are checked against the
//! key functions in `readers.rs`'s unit test (moto does not evaluate IAM conditions).

use formbridge_shared::sharding::ShardHistory;
use time::OffsetDateTime;

use crate::helpers::{ms, start};

#[tokio::test]
async fn a_tenants_reads_go_through_the_tenant_scoped_role() {
    let api = start(|c| c.tenant_read_role_arn = Some("arn:aws:iam::123456789012:role/ApiTenantReadRole".into())).await;
    let p = api.tenant("scoped", ShardHistory::new(2, 0).unwrap()).await;
    let key = api.key(&[&p.tenant_id], "reader").await;
    let now = OffsetDateTime::now_utc();
    let id = api.submission(&p, "contact", ms(now), now).await;

    let (status, body) = api.get(&key, "/v1/submissions?limit=10").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["submissions"][0]["submission_id"], id.to_string());
    let (status, body) = api.get(&key, &format!("/v1/submissions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.get(&key, "/v1/deliveries?status=failed").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.get(&key, "/v1/metrics?granularity=hour").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.get(&key, "/v1/exports?format=jsonl").await;
    assert_eq!(status, 200, "{body}");

    let read = formbridge_shared::aws::component_operations(formbridge_api::readers::COMPONENT);
    assert!(read.contains("dynamodb:Query"), "the listing read through the tenant's role: {read:?}");
    formbridge_shared::testing::assert_role_allows(formbridge_api::readers::COMPONENT, "ApiTenantReadRole");
}
