//! loadtest against the local engine (started by ./deploy/local/test.sh).

mod dictionary_cli;
mod record_replay;
mod short_run;
