//! The ingest endpoint against the local engine (started by ./deploy/local/test.sh).

mod helpers;
mod hostile;
mod lambda;
mod outage;
mod pipeline;
mod schema;
mod slow;
