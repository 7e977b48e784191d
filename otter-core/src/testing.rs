//! Helpers for Otter's own tests (feature `testing`): each test gets a fresh PostgreSQL database,
//! its own Redis key prefix and its own directories, so tests run in parallel on one server.
//! `scripts/test.sh` starts the servers and sets `DATABASE_URL` and `REDIS_URL`.

use std::collections::HashMap;
use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::config::Config;

/// An isolated environment for one test.
#[derive(Debug)]
pub struct TestEnv {
    /// The fresh database's URL.
    pub database_url: String,
    /// Redis's URL.
    pub redis_url: String,
    /// A unique queue name (Redis key prefix).
    pub queue_name: String,
    /// A scratch directory of this test (workspaces, vibe homes).
    pub dir: PathBuf,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through ./scripts/test.sh, which starts PostgreSQL and Redis")
    })
}

impl TestEnv {
    /// Creates a fresh, empty database and a scratch directory. The database is not migrated
    /// here: whatever the test starts does it (`otter_server::build_state` and the worker run
    /// [`crate::db::migrate`] at start), or the test calls it.
    pub async fn new() -> Self {
        let admin_url = required("DATABASE_URL");
        let redis_url = required("REDIS_URL");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("otter_test_{id}");
        let admin: PgConnectOptions = admin_url.parse().expect("DATABASE_URL is a PostgreSQL URL");
        let mut conn = admin.connect().await.expect("connect to DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&db_name);
        let dir = std::env::temp_dir().join(format!("otter-test-{id}"));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        // Open to the job user too (vibe's stand-in writes its records and pid files here),
        // as a temporary directory is.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .expect("open the scratch directory");
        Self {
            database_url: url.to_string(),
            redis_url,
            queue_name: format!("test-{id}"),
            dir,
        }
    }

    /// The variables of a config for this environment; add or override with `extra`.
    pub fn vars(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = [
            ("OTTER_DATABASE_URL", self.database_url.clone()),
            ("OTTER_REDIS_URL", self.redis_url.clone()),
            ("OTTER_QUEUE_NAME", self.queue_name.clone()),
            ("OTTER_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            (
                "OTTER_VIBE_HOME_BASE",
                self.dir.join("vibe-homes").display().to_string(),
            ),
            ("OTTER_DB_MAX_CONNECTIONS", "8".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        vars
    }

    /// A config for this environment.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        Config::from_map(&self.vars(extra)).expect("a valid test config")
    }

    /// Removes what the test's installation left of its units' scope (`OTTER_QUEUE_NAME`), when
    /// nothing runs in it any more.
    fn remove_units_scope(&self) {
        let isolation = crate::isolation::Isolation::new(
            None,
            &crate::config::CgroupRoot::Auto,
            &self.queue_name,
        );
        if let Ok(isolation) = isolation {
            isolation.remove_scope_if_empty();
        }
    }

    /// A new directory under the scratch directory.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).expect("create a test directory");
        path
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.remove_units_scope();
    }
}

/// A copy of the program `path` that the job user can run: Cargo's target directory usually
/// lies in root's home (mode 0700), out of the job user's reach. A hard link where it can be
/// (no space taken), else a copy, made once per build of it into
/// `/tmp/otter-test-bin-<fingerprint>/` (mode 0755); those of builds older than a day go.
pub fn reachable_by_jobs(path: &str) -> String {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fingerprint = format!(
        "{:x}-{:x}-{:x}",
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() ^ meta.mtime()
    );
    let tmp = std::env::temp_dir();
    let dir = tmp.join(format!("otter-test-bin-{fingerprint}"));
    let name = std::path::Path::new(path).file_name().expect("a file name");
    let copy = dir.join(name);
    if !copy.exists() {
        remove_stale_copies(&tmp);
        std::fs::create_dir_all(&dir).expect("create the copy's directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // Made under a private name, then renamed: test processes may do this at once. Linked,
        // or copied by cp, never written here: a child forked meanwhile by another thread of
        // this process would hold the copy open for writing until its exec, and running it
        // would fail with ETXTBSY.
        let partial = dir.join(format!(
            ".{}-{}",
            name.to_string_lossy(),
            uuid::Uuid::new_v4()
        ));
        if std::fs::hard_link(path, &partial).is_err() {
            let copied = std::process::Command::new("cp")
                .arg(path)
                .arg(&partial)
                .status()
                .expect("run cp");
            assert!(copied.success(), "cp {path} {}", partial.display());
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        std::fs::rename(&partial, &copy).expect("put the copy in place");
    }
    copy.display().to_string()
}

/// Removes the `otter-test-bin-*` directories in `tmp` untouched for a day.
fn remove_stale_copies(tmp: &std::path::Path) {
    let day = std::time::Duration::from_secs(24 * 3600);
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with("otter-test-bin-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
