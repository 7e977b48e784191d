//! The build context of a workspace's app: where its Dockerfile is, and the tarball sent to the
//! Docker engine.
//!
//! vibe is told to put each app in a project subfolder with a Dockerfile at its root, so the
//! Dockerfile is looked for in the workspace root first, then one and two folders down (hidden
//! folders and dependency folders skipped); when several folders at the same depth have one, the
//! most recently modified Dockerfile wins (the app vibe worked on last).
//!
//! The tarball follows the Docker CLI: `.dockerignore` is honoured (patterns with `*`, `?`, `**`
//! and `!` exceptions, the last matching line wins, a matched folder excludes its contents), and
//! the Dockerfile and `.dockerignore` are always sent. Without a `.dockerignore`, folders that
//! are never wanted in a context (`.git`, `node_modules`, `target`, virtualenvs) are left out,
//! so that the host's `node_modules` cannot overwrite the ones the image installs. Symlinks are
//! archived as links (never followed out of the workspace), sockets and devices are skipped, and
//! the context is capped at [`MAX_CONTEXT_BYTES`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::RuntimeError;

/// The Dockerfile's name, as the engine expects it by default.
pub const DOCKERFILE: &str = "Dockerfile";

/// Largest build context sent to the engine (file contents, before tar overhead).
pub const MAX_CONTEXT_BYTES: u64 = 256 * 1024 * 1024;

/// Folders never searched for a Dockerfile, and left out of a context without `.dockerignore`.
const HEAVY_DIRS: &[&str] = &[
    ".git",
    "node_modules",
    "target",
    ".venv",
    "venv",
    "__pycache__",
];

/// How deep below the workspace root a Dockerfile is looked for.
const SEARCH_DEPTH: usize = 2;

/// Folders examined at most while looking for a Dockerfile (bounds the time on a huge tree).
const SEARCH_BUDGET: usize = 2000;

/// Finds the folder to build: the workspace root when it has a Dockerfile, else the project
/// subfolder that has one (see the module docs).
pub fn find_context_dir(root: &Path) -> Result<PathBuf, RuntimeError> {
    if !root.is_dir() {
        return Err(RuntimeError::NoDockerfile(format!(
            "the workspace directory {} does not exist",
            root.display()
        )));
    }
    if root.join(DOCKERFILE).is_file() {
        return Ok(root.to_path_buf());
    }
    let mut level = vec![root.to_path_buf()];
    let mut budget = SEARCH_BUDGET;
    for _ in 0..SEARCH_DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            let mut children: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with('.') && !HEAVY_DIRS.contains(&name.as_ref())
                })
                .map(|e| e.path())
                .collect();
            children.sort();
            for child in children {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                next.push(child);
            }
        }
        let mut found: Vec<(SystemTime, PathBuf)> = next
            .iter()
            .filter_map(|dir| {
                let meta = fs::metadata(dir.join(DOCKERFILE)).ok()?;
                meta.is_file().then(|| {
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        dir.clone(),
                    )
                })
            })
            .collect();
        // Newest first; ties by path so the choice is stable.
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        if let Some((_, dir)) = found.into_iter().next() {
            return Ok(dir);
        }
        level = next;
    }
    Err(RuntimeError::NoDockerfile(format!(
        "no {DOCKERFILE} in the workspace {} nor in its project subfolders (searched {SEARCH_DEPTH} levels deep, \
         skipping hidden folders and {})",
        root.display(),
        HEAVY_DIRS.join(", ")
    )))
}

/// Archives `dir` as a build context (see the module docs). Blocking: run it off the async
/// threads.
pub fn tar_context(dir: &Path) -> Result<Vec<u8>, RuntimeError> {
    let ignore = match fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::defaults(),
        Err(e) => return Err(context_io(dir, &e)),
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut total: u64 = 0;
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((path, rel)) = stack.pop() {
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(&path)
            .map_err(|e| context_io(&path, &e))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut child_rel = rel.clone();
            child_rel.push(name);
            let always = child_rel.len() == 1
                && (child_rel[0] == DOCKERFILE || child_rel[0] == ".dockerignore");
            let excluded = !always && ignore.is_excluded(&child_rel);
            let file_type = entry
                .file_type()
                .map_err(|e| context_io(&entry.path(), &e))?;
            let archive_name = child_rel.join("/");
            if file_type.is_dir() {
                if excluded && !ignore.has_exceptions {
                    continue;
                }
                if !excluded {
                    builder
                        .append_path_with_name(entry.path(), &archive_name)
                        .map_err(|e| context_io(&entry.path(), &e))?;
                }
                stack.push((entry.path(), child_rel));
            } else if excluded {
                continue;
            } else if file_type.is_file() || file_type.is_symlink() {
                if file_type.is_file() {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    total = total.saturating_add(size);
                    if total > MAX_CONTEXT_BYTES {
                        return Err(RuntimeError::ContextTooLarge {
                            dir: dir.display().to_string(),
                            limit_mib: MAX_CONTEXT_BYTES / (1024 * 1024),
                        });
                    }
                }
                builder
                    .append_path_with_name(entry.path(), &archive_name)
                    .map_err(|e| context_io(&entry.path(), &e))?;
            }
            // Sockets, fifos and devices have no place in an image context.
        }
    }
    builder.into_inner().map_err(|e| context_io(dir, &e))
}

fn context_io(path: &Path, e: &io::Error) -> RuntimeError {
    RuntimeError::Context(format!("cannot read {}: {e}", path.display()))
}

/// `.dockerignore` rules.
#[derive(Debug, Clone, Default)]
struct Ignore {
    rules: Vec<Rule>,
    /// Whether any rule is an exception (`!pattern`): excluded folders must then be descended.
    has_exceptions: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    parts: Vec<String>,
}

impl Ignore {
    fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let parts: Vec<String> = pattern
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(str::to_owned)
                .collect();
            if parts.is_empty() {
                continue;
            }
            rules.push(Rule { exception, parts });
        }
        let has_exceptions = rules.iter().any(|r| r.exception);
        Self {
            rules,
            has_exceptions,
        }
    }

    fn defaults() -> Self {
        Self {
            rules: HEAVY_DIRS
                .iter()
                .map(|d| Rule {
                    exception: false,
                    parts: vec![(*d).to_owned()],
                })
                .collect(),
            has_exceptions: false,
        }
    }

    /// Whether the path (components relative to the context root) is left out: the last rule
    /// that matches it, or one of its parent folders, decides.
    fn is_excluded(&self, path: &[String]) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            let matches = (1..=path.len()).any(|n| glob_parts(&rule.parts, &path[..n]));
            if matches {
                excluded = !rule.exception;
            }
        }
        excluded
    }
}

/// Matches path components against pattern components; `**` spans any number of components.
fn glob_parts(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => glob(first, name) && glob_parts(rest, path_rest),
            None => false,
        },
    }
}

/// Matches one name against a pattern with `*` (any run of characters) and `?` (one character).
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "otter-context-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("parent");
        }
        fs::write(path, text).expect("write");
    }

    fn names(tarball: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tarball);
        let mut names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn glob_handles_stars_and_question_marks() {
        assert!(glob("*.log", "app.log"));
        assert!(!glob("*.log", "app.txt"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn dockerignore_rules_follow_docker() {
        let ignore = Ignore::parse(
            "# comment\nnode_modules\n/dist/\n**/*.log\n*.md\n!README.md\nsecret/**\n",
        );
        assert!(ignore.is_excluded(&parts("node_modules")));
        assert!(ignore.is_excluded(&parts("node_modules/x/index.js")));
        assert!(ignore.is_excluded(&parts("dist/app.js")));
        assert!(ignore.is_excluded(&parts("a/b/c.log")));
        assert!(ignore.is_excluded(&parts("debug.log")));
        assert!(ignore.is_excluded(&parts("NOTES.md")));
        assert!(!ignore.is_excluded(&parts("README.md")));
        assert!(
            !ignore.is_excluded(&parts("docs/NOTES.md")),
            "*.md is root-only"
        );
        assert!(ignore.is_excluded(&parts("secret/key")));
        assert!(!ignore.is_excluded(&parts("src/main.rs")));
        assert!(ignore.has_exceptions);
    }

    #[test]
    fn context_skips_heavy_dirs_without_dockerignore() {
        let dir = scratch("defaults");
        write(&dir.join("Dockerfile"), "FROM scratch\n");
        write(&dir.join("src/app.js"), "x");
        write(&dir.join("node_modules/m/index.js"), "x");
        write(&dir.join(".git/HEAD"), "x");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).expect("symlink");
        let got = names(&tar_context(&dir).expect("tar"));
        assert_eq!(got, vec!["Dockerfile", "link", "src", "src/app.js"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn context_honours_dockerignore_and_always_sends_the_dockerfile() {
        let dir = scratch("ignore");
        write(&dir.join("Dockerfile"), "FROM scratch\n");
        write(
            &dir.join(".dockerignore"),
            "Dockerfile\n.dockerignore\nlogs\n!logs/keep.txt\n",
        );
        write(&dir.join("logs/a.txt"), "x");
        write(&dir.join("logs/keep.txt"), "x");
        write(&dir.join("node_modules/m.js"), "x");
        let got = names(&tar_context(&dir).expect("tar"));
        assert_eq!(
            got,
            vec![
                ".dockerignore",
                "Dockerfile",
                "logs/keep.txt",
                "node_modules",
                "node_modules/m.js"
            ]
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn dockerfile_is_found_in_the_root_or_the_newest_project_folder() {
        let root = scratch("find");
        let err = find_context_dir(&root).unwrap_err().to_string();
        assert!(err.contains(&root.display().to_string()), "{err}");
        write(&root.join("node_modules/pkg/Dockerfile"), "FROM scratch\n");
        write(&root.join(".hidden/Dockerfile"), "FROM scratch\n");
        assert!(find_context_dir(&root).is_err());

        write(&root.join("old-app/Dockerfile"), "FROM scratch\n");
        write(&root.join("deep/new-app/Dockerfile"), "FROM scratch\n");
        assert_eq!(find_context_dir(&root).unwrap(), root.join("old-app"));
        let old = fs::File::options()
            .write(true)
            .open(root.join("old-app/Dockerfile"))
            .unwrap();
        old.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        write(&root.join("new-app/Dockerfile"), "FROM scratch\n");
        assert_eq!(find_context_dir(&root).unwrap(), root.join("new-app"));

        write(&root.join("Dockerfile"), "FROM scratch\n");
        assert_eq!(find_context_dir(&root).unwrap(), root);
        assert!(find_context_dir(&root.join("missing")).is_err());
        let _ = fs::remove_dir_all(&root);
    }
}
