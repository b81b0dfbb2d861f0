//! The tenant API against the local engine (started by ./deploy/local/test.sh).

mod browser;
mod destinations;
mod helpers;
mod lambda_binary;
mod listing;
mod metrics;
mod privacy;
mod security;
mod tenant_role;
