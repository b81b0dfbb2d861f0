//! `keys::Entity::classify` on an arbitrary primary key: the input is `PK`, a newline, then `SK`
//! (which may hold further newlines). Stream consumers route every record on this, so it must
//! never panic; what it recognises must rebuild, with the key builders, into a key it classifies
//! the same way, and `keys::tenant_of` must name the same tenant.
#![no_main]

use libfuzzer_sys::fuzz_target;

use formbridge_shared::keys::{self, Entity, ItemKey};

fn rebuilt(entity: &Entity, pk: &str, sk: &str) -> Option<ItemKey> {
    Some(match entity {
        Entity::TenantProfile { tenant } => keys::tenant_profile(tenant),
        Entity::Site { domain } => keys::site(domain),
        Entity::Submission { tenant, shard, id } => keys::submission(tenant, *shard, id),
        Entity::Delivery { tenant, shard, id, dest } => keys::delivery(tenant, *shard, id, dest),
        Entity::DeliveryAttempt { tenant, shard, id, dest, attempt } => {
            keys::delivery_attempt(tenant, *shard, id, dest, *attempt)
        }
        Entity::Destination { tenant, dest } => keys::destination(tenant, dest),
        Entity::DestinationHealth { tenant, dest } => keys::destination_health(tenant, dest),
        Entity::DestinationSet { tenant } => keys::destination_set(tenant),
        Entity::Metrics { tenant, bucket } => ItemKey { pk: keys::metrics_pk(tenant), sk: bucket.clone() },
        // The month is free text to the classifier: the key itself is the canonical one.
        Entity::Audit { .. } | Entity::Security => ItemKey { pk: pk.to_owned(), sk: sk.to_owned() },
        Entity::Unknown => return None,
    })
}

fn tenant(entity: &Entity) -> Option<&formbridge_shared::TenantId> {
    match entity {
        Entity::TenantProfile { tenant }
        | Entity::Submission { tenant, .. }
        | Entity::Delivery { tenant, .. }
        | Entity::DeliveryAttempt { tenant, .. }
        | Entity::Destination { tenant, .. }
        | Entity::DestinationHealth { tenant, .. }
        | Entity::DestinationSet { tenant }
        | Entity::Metrics { tenant, .. }
        | Entity::Audit { tenant } => Some(tenant),
        Entity::Site { .. } | Entity::Security | Entity::Unknown => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // DynamoDB strings are UTF-8.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pk, sk) = text.split_once('\n').unwrap_or((text, ""));
    let entity = Entity::classify(pk, sk);
    let _ = keys::tenant_of(pk);
    let Some(key) = rebuilt(&entity, pk, sk) else { return };
    assert_eq!(Entity::classify(&key.pk, &key.sk), entity, "{key:?} rebuilt from ({pk:?}, {sk:?})");
    if let Some(t) = tenant(&entity) {
        assert_eq!(keys::tenant_of(pk).as_ref(), Some(t), "the key's tenant partition is the entity's tenant");
    }
});
