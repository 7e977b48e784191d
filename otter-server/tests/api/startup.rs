//! Start-up failures name what to fix.

use std::process::Command;

#[test]
fn a_bad_database_url_stops_startup_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_otter-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "OTTER_DATABASE_URL",
            "postgres://otter:wrong@127.0.0.1:1/otter",
        )
        .env("OTTER_REDIS_URL", "redis://127.0.0.1:1")
        .env("OTTER_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .expect("run otter-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTTER_DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("wrong"), "the password leaked: {stderr}");
}

#[test]
fn a_malformed_or_missing_variable_is_named() {
    for (vars, needle) in [
        (
            vec![("OTTER_REDIS_URL", "redis://127.0.0.1:1")],
            "OTTER_DATABASE_URL is required",
        ),
        (
            vec![
                ("OTTER_DATABASE_URL", "mysql://x@h/d"),
                ("OTTER_REDIS_URL", "redis://127.0.0.1:1"),
            ],
            "OTTER_DATABASE_URL is invalid",
        ),
        (
            vec![
                ("OTTER_DATABASE_URL", "postgres://x@h/d"),
                ("OTTER_REDIS_URL", "redis://127.0.0.1:1"),
                ("OTTER_WORKER_CONCURRENCY", "lots"),
            ],
            "OTTER_WORKER_CONCURRENCY",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_otter-server"))
            .env_clear()
            .envs(vars)
            .output()
            .expect("run otter-server");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[tokio::test]
async fn a_public_address_without_tokens_is_refused() {
    // PostgreSQL and Redis must answer for start-up to reach the listener check: a database of
    // its own (migrated by the server), never the developer's shared one, whose migrations may be
    // another branch's.
    let env = otter_testkit::TestEnv::new().await;
    let stderr = crate::auth::refused_start(&env, &[("OTTER_LISTEN_ADDR", "0.0.0.0:0")]);
    assert!(stderr.contains("OTTER_API_TOKENS"), "{stderr}");
}
