//! `formbridge-loadtest`: traffic generation, load runs with a built-in receiver and a report,
//! queue record/replay, and the cost model.

pub mod api_bench;
pub mod ceiling;
pub mod chaos;
pub mod cost;
pub mod dictionary;
pub mod gen;
pub mod queue_io;
pub mod rate;
pub mod report;
pub mod run;
