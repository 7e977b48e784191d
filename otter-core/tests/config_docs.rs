//! The configuration's documentation cannot drift from the code: every variable `Config` reads,
//! and every one `otter-demo-model` reads, is in `.env.example` and in README.md's table, and
//! `.env.example` itself is a valid config.

use std::collections::{BTreeSet, HashMap};

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `"OTTER_…"` string literal in the two config modules: the variables `Config` and
/// `otter-demo-model`'s `Settings` read.
fn variables() -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for file in ["otter-core/src/config.rs", "otter-demo-model/src/config.rs"] {
        let source = repo_file(file);
        for piece in source.split('"').skip(1).step_by(2) {
            if piece.starts_with("OTTER_")
                && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            {
                vars.insert(piece.to_owned());
            }
        }
    }
    assert!(
        vars.contains("OTTER_DEMO_MODEL_LISTEN"),
        "found only {vars:?}"
    );
    vars.insert("MISTRAL_API_KEY".to_owned());
    assert!(vars.len() > 30, "found only {vars:?}");
    vars
}

#[test]
fn every_variable_is_in_env_example_and_the_readme() {
    let example = repo_file(".env.example");
    let readme = repo_file("README.md");
    for var in variables() {
        assert!(
            example.contains(&format!("{var}=")),
            ".env.example lacks {var}"
        );
        assert!(
            readme.contains(&format!("`{var}`")),
            "README.md's table lacks {var}"
        );
    }
}

#[test]
fn env_example_is_a_valid_configuration() {
    let vars: HashMap<String, String> = repo_file(".env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let config = otter_core::Config::from_map(&vars).expect(".env.example parses");
    assert_eq!(config.max_attempts, 5);
    assert_eq!(config.runtime_network, "otter_default");
    // The demo model is off unless asked for, also in a .env copied from the example.
    assert!(!config.demo);
}
