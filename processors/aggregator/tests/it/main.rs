//! The aggregator against the local engine (started by ./deploy/local/test.sh).

mod cost_alerts;
mod exactly_once;
mod hot_partitions;
mod lambda;
