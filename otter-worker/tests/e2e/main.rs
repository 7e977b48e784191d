//! End-to-end tests: a real server and a real worker (in this process) over a fresh PostgreSQL
//! database and a private Redis queue, running the project's vibe stand-in
//! (`otter-fake-vibe`, which reproduces the real CLI's captured output).

mod changes;
mod chaos;
mod cli;
mod conversations;
mod fair_shares;
mod harness;
mod isolation;
mod lifecycle;
mod observability;
mod runs;
mod streaming;
mod watchdogs;
mod webhooks;
