//! The API's integration tests: a real server on 127.0.0.1, a fresh PostgreSQL database and a
//! private Redis queue per test.

mod attacks;
mod auth;
mod changes;
mod commands;
mod connections;
mod console;
mod conversations;
mod errors;
mod files;
mod guarantees;
mod isolation;
mod logs;
mod memory;
mod openapi;
mod packaging;
mod paths;
mod preview;
mod queue;
mod requests;
mod runtime;
mod startup;
mod stream;
