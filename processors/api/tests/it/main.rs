//! The tenant API against the local engine (started by ./deploy/local/test.sh).

mod helpers;
mod listing;
mod metrics;
mod security;
