//! The Form-Bridge data layer, shared by every process: typed ids, the one module that builds
//! keys, the payload codec, write sharding, request-unit arithmetic, the queue message and item
//! formats, the AWS client factory and the resource bootstrap.

pub mod apikey;
pub mod attrs;
pub mod audit;
pub mod aws;
pub mod billing;
pub mod bootstrap;
pub mod buckets;
pub mod capacity;
pub mod clock;
pub mod codec;
pub mod cost_model;
pub mod costs;
pub mod cursor;
pub mod delivery;
pub mod destination;
pub mod domain;
pub mod erasure;
pub mod ids;
pub mod keys;
pub mod lambda;
pub mod legacy;
pub mod listing;
pub mod portal;
pub mod queue;
pub mod recommend;
pub mod retry;
pub mod sample;
pub mod secrets;
pub mod sharding;
pub mod shutdown;
pub mod site;
pub mod store;
pub mod stream;
pub mod submission;
pub mod telemetry;
pub mod tenant;
pub mod usage;

pub use ids::{DestinationId, FormId, IdError, MigrationId, SiteDomain, SubmissionId, TenantId};
#[cfg(feature = "testing")]
pub mod testing;
