//! The aggregator against the local engine (started by ./deploy/local/test.sh).

mod exactly_once;
mod lambda;
