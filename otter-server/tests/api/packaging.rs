//! The shipped compose file is valid, and `.env.example` is enough to configure it.

use std::process::Command;

#[test]
fn docker_compose_config_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("otter-compose-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root.join("docker-compose.yml"),
        dir.join("docker-compose.yml"),
    )
    .unwrap();
    std::fs::copy(root.join(".env.example"), dir.join(".env")).unwrap();
    // Compose v2 (`docker compose`) where the docker CLI has it, else v1 (`docker-compose`).
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let compose: Option<(&str, Vec<&str>)> = if v2 {
        Some(("docker", vec!["compose"]))
    } else if v1 {
        Some(("docker-compose", vec![]))
    } else {
        None
    };
    let ran = compose.is_some();
    if let Some((program, prefix)) = compose {
        let check = Command::new(program)
            .args(&prefix)
            .args(["config", "-q"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            check.status.success(),
            "{program} {prefix:?} config -q failed: {stderr}"
        );
        let full = Command::new(program)
            .args(&prefix)
            .arg("config")
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&full.stdout);
        for service in ["postgres:", "redis:", "otter-server:", "otter-worker:"] {
            assert!(
                text.contains(service),
                "{service} missing from the resolved config"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    if !ran {
        eprintln!(
            "\n*** SKIPPED docker_compose_config_passes: neither `docker compose` nor `docker-compose` is installed ***\n"
        );
    }
}
