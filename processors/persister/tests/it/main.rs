//! The persister against the local engine (started by ./deploy/local/test.sh).

mod helpers;
mod lambda_binary;
mod lease;
mod pipeline;
mod startup;
