//! The demo model as Otter sees it (`OTTER_DEMO=true`): instead of a real model, every
//! workspace's vibe talks to `otter-demo-model`, a scripted chat-completions server at
//! `OTTER_DEMO_MODEL_URL`, for a first run without an API key, frontend development and CI.
//!
//! Two things make vibe use it, both applied by the worker before each run (so workspaces made
//! before the demo was turned on get it too, and lose it when it is turned off):
//!
//! * a provider and a model entry, both named [`MODEL`], in the workspace's
//!   `VIBE_HOME/config.toml` ([`merge_vibe_config`]), priced at 0 so a run costs nothing. The
//!   entry sits between two marker comments and is the only part of the file this module
//!   touches: the template's providers and models stay as they were;
//! * vibe's environment ([`vibe_env`]): the model variables name [`MODEL`] (vibe 3.x reads
//!   `VIBE_ACTIVE_MODEL`, whose environment layer outranks `config.toml`, so the template's own
//!   `active_model` line is left alone), and the provider's key variable gets a dummy value, so
//!   vibe never stops at a missing key.

/// The demo model's name and alias in vibe's configuration, the provider's name, and the name
/// `otter-demo-model` reports in its answers.
pub const MODEL: &str = "otter-demo";

/// The environment variable the demo provider's `api_key_env_var` names.
pub const API_KEY_VAR: &str = "OTTER_DEMO_API_KEY";

/// The dummy key vibe sends to the demo model (which accepts any key).
pub const API_KEY: &str = "otter-demo-not-a-real-key";

/// First line of the entry in `config.toml`.
const BEGIN: &str =
    "# >>> Otter demo model (OTTER_DEMO=true): written by Otter, removed when OTTER_DEMO is off.";
/// Last line of the entry.
const END: &str = "# <<< Otter demo model";

/// `config.toml` with the demo entry pointing at `api_base` when it is `Some`, and without any
/// demo entry when it is `None`; every other line is kept. Applying it twice changes nothing.
pub fn merge_vibe_config(existing: &str, api_base: Option<&str>) -> String {
    let mut out = String::with_capacity(existing.len() + 512);
    let mut inside = false;
    let mut removed = false;
    for line in existing.lines() {
        match line.trim_end() {
            BEGIN => (inside, removed) = (true, true),
            END if inside => inside = false,
            _ if inside => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let Some(api_base) = api_base {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&entry(api_base));
    } else if removed {
        // Taking the entry out leaves the blank line that separated it.
        while out.ends_with("\n\n") {
            out.pop();
        }
    }
    out
}

/// The provider and model entry for `api_base`, between the markers.
fn entry(api_base: &str) -> String {
    format!(
        "{BEGIN}
[[providers]]
name = \"{MODEL}\"
api_base = {api_base}
api_key_env_var = \"{API_KEY_VAR}\"
backend = \"generic\"
api_style = \"openai\"

[[models]]
name = \"{MODEL}\"
provider = \"{MODEL}\"
alias = \"{MODEL}\"
display_name = \"Otter demo model (not a real model)\"
temperature = 0.2
input_price = 0.0
output_price = 0.0
max_context_length = 131072
{END}
",
        api_base = crate::workspace::toml_string(api_base),
    )
}

/// What the worker adds to vibe's environment for a demo run: the model variables (all three,
/// for every vibe version, DESIGN.md §4) and the provider's dummy key.
pub fn vibe_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"]
        .into_iter()
        .map(|name| (name.to_owned(), MODEL.to_owned()))
        .collect();
    env.push((API_KEY_VAR.to_owned(), API_KEY.to_owned()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "active_model = \"mock\"\n\n[[providers]]\nname = \"mock\"\n\n[[models]]\nname = \"mock-model\"\nprovider = \"mock\"\n";

    #[test]
    fn the_entry_is_added_once_and_taken_out_again() {
        let on = merge_vibe_config(TEMPLATE, Some("http://127.0.0.1:8090/v1"));
        assert!(
            on.starts_with(TEMPLATE),
            "the template is kept as it was:\n{on}"
        );
        assert!(
            on.contains("api_base = \"http://127.0.0.1:8090/v1\""),
            "{on}"
        );
        assert!(on.contains("input_price = 0.0\noutput_price = 0.0"), "{on}");
        assert_eq!(on.matches("[[providers]]").count(), 2, "{on}");
        assert_eq!(on.matches(BEGIN).count(), 1, "{on}");
        // Idempotent, and a new URL replaces the old one.
        assert_eq!(merge_vibe_config(&on, Some("http://127.0.0.1:8090/v1")), on);
        let moved = merge_vibe_config(&on, Some("http://otter-demo-model:8090/v1"));
        assert!(moved.contains("http://otter-demo-model:8090/v1"), "{moved}");
        assert!(!moved.contains("127.0.0.1:8090"), "{moved}");
        assert_eq!(moved.matches(BEGIN).count(), 1, "{moved}");
        // Off: exactly the template again; a file without an entry is left as it is.
        assert_eq!(merge_vibe_config(&on, None), TEMPLATE);
        assert_eq!(merge_vibe_config(TEMPLATE, None), TEMPLATE);
        let spaced = format!("{TEMPLATE}\n\n");
        assert_eq!(merge_vibe_config(&spaced, None), spaced);
        assert_eq!(merge_vibe_config("", None), "");
    }

    #[test]
    fn an_empty_file_gets_only_the_entry() {
        let on = merge_vibe_config("", Some("http://h:1/v1"));
        assert!(on.starts_with(BEGIN), "{on}");
        assert!(on.ends_with(&format!("{END}\n")), "{on}");
        assert_eq!(merge_vibe_config(&on, None), "");
    }

    #[test]
    fn the_url_is_a_toml_string() {
        let on = merge_vibe_config("", Some("http://h:1/v1\"\nevil = true"));
        assert!(
            on.contains("api_base = \"http://h:1/v1\\\"\\u000aevil = true\""),
            "{on}"
        );
    }

    #[test]
    fn vibe_is_told_the_model_and_given_a_key() {
        let env = vibe_env();
        for name in ["VIBE_ACTIVE_MODEL", "VIBE_MODEL", "MISTRAL_MODEL"] {
            assert!(env.contains(&(name.to_owned(), MODEL.to_owned())), "{name}");
        }
        assert!(env.contains(&(API_KEY_VAR.to_owned(), API_KEY.to_owned())));
    }
}
