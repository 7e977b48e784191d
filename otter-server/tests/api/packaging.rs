//! The shipped compose file and Dockerfile: valid for Compose v1 and v2 with and without `.env`,
//! every base image and the published port set by a variable, the demo model behind its profile,
//! the Docker socket reachable from both the server and the worker, and a Dockerfile that the
//! classic builder accepts. The stack itself is built and brought up by
//! `scripts/compose-smoke.sh` (a step of `scripts/test.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compose v2 (`docker compose`) where the docker CLI has it, else v1 (`docker-compose`); fails
/// the test when neither is installed.
fn compose(test: &str) -> (&'static str, Vec<&'static str>) {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker", &["compose", "version"]) {
        ("docker", vec!["compose"])
    } else if works("docker-compose", &["version"]) {
        ("docker-compose", vec![])
    } else {
        otter_testkit::prerequisite_missing(
            test,
            "neither `docker compose` nor `docker-compose` is installed",
        )
    }
}

/// A scratch directory holding the compose file, and `.env.example` as `.env` when `with_env`.
fn project(with_env: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otter-compose-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join("docker-compose.yml"),
        dir.join("docker-compose.yml"),
    )
    .unwrap();
    if with_env {
        std::fs::copy(root().join(".env.example"), dir.join(".env")).unwrap();
    }
    dir
}

/// `compose [args] config` in `dir` with `vars` set (and every OTTER_ variable of the test's own
/// environment removed): the resolved file, or a panic with compose's error.
fn resolved(
    (program, prefix): &(&str, Vec<&str>),
    dir: &Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> String {
    let mut cmd = Command::new(program);
    cmd.args(prefix).args(args).arg("config").current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTTER_") || key == "COMPOSE_PROJECT_NAME" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(vars.iter().copied());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{program} {prefix:?} {args:?} config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of one service in a resolved compose file (`  name:` up to the next service).
fn service_block(resolved: &str, name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = resolved.lines().skip_while(|l| *l != header);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no service {name} in:\n{resolved}"));
    let rest = lines.take_while(|l| l.starts_with("   ") || l.is_empty());
    std::iter::once(first)
        .chain(rest)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_compose_file_resolves_with_and_without_a_dot_env() {
    let compose = compose("the_compose_file_resolves_with_and_without_a_dot_env");
    for with_env in [true, false] {
        let dir = project(with_env);
        let text = resolved(&compose, &dir, &[], &[]);
        for service in ["postgres:", "redis:", "otter-server:", "otter-worker:"] {
            assert!(
                text.contains(service),
                "{service} missing from the resolved config (.env: {with_env})"
            );
        }
        // The demo model is off unless asked for: it is in the `demo` profile alone.
        let demo = service_block(&text, "otter-demo-model");
        assert!(
            demo.contains("profiles:") && demo.contains("- demo"),
            "the demo model is not behind the demo profile (.env: {with_env}):\n{demo}"
        );
        for service in ["postgres", "redis", "otter-server", "otter-worker"] {
            assert!(
                !service_block(&text, service).contains("profiles:"),
                "{service} is behind a profile"
            );
        }
        // The official images by default, the port on the host's loopback only.
        for image in [
            "rust:1-trixie",
            "debian:trixie-slim",
            "python:3.12-slim-trixie",
            "postgres:16-bookworm",
            "redis:7-bookworm",
        ] {
            assert!(text.contains(image), "{image} is not the default:\n{text}");
        }
        assert!(text.contains("127.0.0.1"), "{text}");
        // The API tokens are the server's alone: a job of the worker must find none.
        assert!(
            service_block(&text, "otter-server").contains("OTTER_API_TOKENS"),
            "{text}"
        );
        assert!(
            !service_block(&text, "otter-worker").contains("OTTER_API_TOKENS"),
            "the worker is given OTTER_API_TOKENS:\n{}",
            service_block(&text, "otter-worker")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn every_base_image_the_port_and_the_docker_group_are_variables() {
    let compose = compose("every_base_image_the_port_and_the_docker_group_are_variables");
    let dir = project(false);
    let vars = [
        ("OTTER_RUST_IMAGE", "example.test/rust-standin:1"),
        ("OTTER_DEBIAN_IMAGE", "example.test/debian-standin:1"),
        ("OTTER_PYTHON_IMAGE", "example.test/python-standin:1"),
        ("OTTER_POSTGRES_IMAGE", "example.test/postgres-standin:1"),
        ("OTTER_REDIS_IMAGE", "example.test/redis-standin:1"),
        ("OTTER_HTTP_PORT", "18123"),
        ("OTTER_DOCKER_GID", "4242"),
    ];
    let text = resolved(&compose, &dir, &["--profile", "demo"], &vars);
    for (name, value) in vars {
        assert!(text.contains(value), "{name}={value} is not used:\n{text}");
    }
    // The server (runtime API) and the worker (vibe's docker CLI) both reach the socket, each
    // with the socket's group.
    assert_eq!(
        text.matches("/var/run/docker.sock:/var/run/docker.sock")
            .count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("4242").count(), 2, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_dockerfile_builds_with_the_classic_builder_and_caches_dependencies() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // BuildKit-only syntax makes the classic builder (engine 20.10 without buildx) refuse it, and
    // a syntax directive makes BuildKit pull a frontend image.
    assert!(
        !dockerfile.lines().any(|l| l.starts_with("# syntax")),
        "a syntax directive"
    );
    assert!(
        !dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with("RUN") && l.contains("--mount")),
        "RUN --mount needs BuildKit"
    );
    for arg in [
        "OTTER_RUST_IMAGE",
        "OTTER_DEBIAN_IMAGE",
        "OTTER_PYTHON_IMAGE",
    ] {
        assert!(
            dockerfile.contains(&format!("ARG {arg}=")),
            "{arg} is not a build argument with a default"
        );
    }
    assert!(dockerfile.contains("ARG OTTER_EXTRA_CA_CERT"));
    // The dependency layer is built from every member's manifest: a crate left out would fail
    // the build (or silently miss the cache).
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        for copy in [
            format!("COPY {member}/Cargo.toml {member}/Cargo.toml"),
            format!("COPY {member} {member}"),
        ] {
            assert!(dockerfile.contains(&copy), "the Dockerfile lacks `{copy}`");
        }
    }
}
