//! Integration tests of the data layer: schema fixtures, and the bootstrap and store against the
//! local engine (started by ./deploy/local/test.sh).

mod api_keys;
mod aws_requests;
mod dead_letters;
mod destinations;
mod migration;
mod recommend;
mod schemas;
mod stack;
mod stream;
mod support;
