//! The delivery worker against the local engine (started by ./deploy/local/test.sh), with real
//! HTTP receivers on 127.0.0.1 in the test process.

mod edges;
mod harness;
mod lambda;
mod outcomes;
mod resilience;
mod schemas;
