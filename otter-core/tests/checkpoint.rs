//! Checkpoints of a real workspace on disk (`otter_core::checkpoint`): what a job changed, its
//! diff as `git apply` takes it, undo, and what a checkpoint leaves alone (the workspace's own
//! git repository, ignored and heavy folders, files over the cap, what symlinks point to).
//! As root the walk and the restore run as the job user `otter-job`, as in production.

use std::path::{Path, PathBuf};
use std::process::Command;

use otter_core::checkpoint::{ChangeStatus, Checkpoints, Summary};
use otter_core::config::CgroupRoot;
use otter_core::isolation::Isolation;
use otter_core::model::WorkspaceId;

struct Fixture {
    dir: PathBuf,
    ws: PathBuf,
    id: WorkspaceId,
    checkpoints: Checkpoints,
    isolation: Isolation,
}

const CAP: u64 = 64 * 1024;

impl Fixture {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("otter-ckpt-{}", uuid::Uuid::new_v4().simple()));
        let ws = dir.join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let isolation = Isolation::new(Some("otter-job"), &CgroupRoot::None, "checkpoint-tests")
            .expect("as root, the job user otter-job must exist");
        if let Some(user) = isolation.job_user() {
            // The job's workspace is the job user's; the store stays this process's.
            user.give_dir(&ws).unwrap();
        }
        let checkpoints = Checkpoints::new(dir.join("store"), CAP);
        Self {
            dir,
            ws,
            id: WorkspaceId::new(),
            checkpoints,
            isolation,
        }
    }

    /// Writes `content` to `rel` in the workspace, as the job would.
    fn write(&self, rel: &str, content: &str) {
        let path = self.ws.join(rel);
        self.isolation.as_job(|| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
        });
    }

    fn remove(&self, rel: &str) {
        self.isolation
            .as_job(|| std::fs::remove_file(self.ws.join(rel)).unwrap());
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.ws.join(rel)).ok()
    }

    fn take(&self) -> otter_core::checkpoint::Manifest {
        self.checkpoints
            .take(&self.isolation, self.id, &self.ws)
            .unwrap()
    }

    fn run(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every file under `dir` with its bytes: to see that nothing in it changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn adding_editing_and_deleting_a_file_shows_exactly_those_three_with_a_diff_that_reverses() {
    let f = Fixture::new();
    f.write("src/kept.txt", "same\n");
    f.write("src/edited.txt", "one\ntwo\nthree\n");
    f.write("src/deleted.txt", "gone soon\nreally\n");
    let before = f.take();

    f.write("src/added.txt", "new\nfile\n");
    f.write("src/edited.txt", "one\n2\nthree\nfour\n");
    f.remove("src/deleted.txt");
    let after = f.take();

    let changes = f.checkpoints.changes(f.id, before.id, after.id).unwrap();
    let got: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.path.as_str(),
                c.status,
                c.additions,
                c.deletions,
                c.binary,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("src/added.txt", ChangeStatus::Added, 2, 0, false),
            ("src/deleted.txt", ChangeStatus::Deleted, 0, 2, false),
            ("src/edited.txt", ChangeStatus::Modified, 2, 1, false),
        ]
    );
    assert_eq!(
        Summary::of(&changes),
        Summary {
            files_changed: 3,
            additions: 4,
            deletions: 3
        }
    );

    let diff = f
        .checkpoints
        .diff(f.id, before.id, after.id, None, 1 << 20)
        .unwrap();
    assert!(!diff.truncated);
    assert_eq!((diff.files, diff.files_shown), (3, 3));
    // The diff takes the workspace back to before with `git apply -R`, in a copy of it.
    let copy = f.dir.join("copy");
    f.run(
        &f.dir,
        &["cp", "-a", f.ws.to_str().unwrap(), copy.to_str().unwrap()],
    );
    let patch = f.dir.join("job.diff");
    std::fs::write(&patch, &diff.text).unwrap();
    f.run(&copy, &["git", "apply", "-R", patch.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(copy.join("src/deleted.txt")).unwrap(),
        "gone soon\nreally\n"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("src/edited.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );
    assert!(!copy.join("src/added.txt").exists());
    // And forward again.
    f.run(&copy, &["git", "apply", patch.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(copy.join("src/added.txt")).unwrap(),
        "new\nfile\n"
    );

    // One path alone.
    let one = f
        .checkpoints
        .diff(f.id, before.id, after.id, Some("src/edited.txt"), 1 << 20)
        .unwrap();
    assert!(
        one.text
            .starts_with("diff --git a/src/edited.txt b/src/edited.txt\n"),
        "{}",
        one.text
    );
    assert_eq!((one.files, one.files_shown), (1, 1));

    // Nothing changed since: an empty list.
    let again = f.take();
    assert!(
        f.checkpoints
            .changes(f.id, after.id, again.id)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_cut_diff_says_where_it_was_cut_and_shows_whole_files_only() {
    let f = Fixture::new();
    let before = f.take();
    for i in 0..5 {
        f.write(&format!("f{i}.txt"), &"a line of text\n".repeat(20));
    }
    let after = f.take();
    let whole = f
        .checkpoints
        .diff(f.id, before.id, after.id, None, 1 << 20)
        .unwrap();
    let per_file = whole.text.len() / 5;
    let cut = f
        .checkpoints
        .diff(f.id, before.id, after.id, None, per_file * 2 + 10)
        .unwrap();
    assert!(cut.truncated);
    assert_eq!((cut.files, cut.files_shown), (5, 2));
    let last = cut.text.lines().last().unwrap();
    assert!(
        last.starts_with("# otter: diff cut here at") && last.contains("2 of 5 files"),
        "{last}"
    );
    // What is shown still applies.
    let empty = f.dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let patch = f.dir.join("cut.diff");
    std::fs::write(&patch, &cut.text).unwrap();
    f.run(&empty, &["git", "apply", patch.to_str().unwrap()]);
    assert!(empty.join("f1.txt").exists() && !empty.join("f2.txt").exists());
}

#[test]
fn the_workspaces_own_git_repository_is_never_touched() {
    let f = Fixture::new();
    f.write("app.py", "print('hi')\n");
    f.write("sub/project/lib.py", "x = 1\n");
    let sub = f.ws.join("sub/project");
    let as_job_git = |dir: &Path, args: &[&str]| {
        let mut cmd = if f.isolation.job_user().is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "otter-job", "--", "git"]);
            c
        } else {
            Command::new("git")
        };
        let out = cmd
            .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // git refuses a repository another user owns: the job user runs it, as vibe would.
    as_job_git(&f.ws, &["init", "-q"]);
    as_job_git(&sub, &["init", "-q"]);
    as_job_git(&f.ws, &["add", "app.py"]);
    as_job_git(&f.ws, &["commit", "-qm", "first"]);
    as_job_git(&sub, &["add", "-A"]);
    as_job_git(&sub, &["commit", "-qm", "nested"]);
    let dot_git = snapshot(&f.ws.join(".git"));
    let nested_git = snapshot(&sub.join(".git"));
    let status = as_job_git(&f.ws, &["status", "--porcelain"]);

    let before = f.take();
    f.write("app.py", "print('bye')\n");
    f.write("sub/project/lib.py", "x = 2\n");
    let after = f.take();
    let restored = f
        .checkpoints
        .restore(&f.isolation, f.id, &f.ws, before.id)
        .unwrap();

    // Files inside a nested repository are followed like any other (git would stop at it).
    let changed: Vec<_> = f
        .checkpoints
        .changes(f.id, before.id, after.id)
        .unwrap()
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(changed, ["app.py", "sub/project/lib.py"]);
    assert!(
        before.files.keys().all(|p| !p.contains(".git/")),
        "{:?}",
        before.files.keys()
    );
    assert_eq!(restored.written, ["app.py", "sub/project/lib.py"]);
    assert_eq!(
        snapshot(&f.ws.join(".git")),
        dot_git,
        "the workspace's .git changed"
    );
    assert_eq!(
        snapshot(&sub.join(".git")),
        nested_git,
        "the nested .git changed"
    );
    assert_eq!(as_job_git(&f.ws, &["status", "--porcelain"]), status);
}

#[test]
fn a_restore_to_before_brings_back_what_was_deleted_removes_what_was_added_and_can_be_undone() {
    let f = Fixture::new();
    f.write("keep.txt", "keep\n");
    f.write("doomed/old.txt", "old\n");
    f.write("run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        f.ws.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let before = f.take();
    f.remove("doomed/old.txt");
    f.isolation
        .as_job(|| std::fs::remove_dir(f.ws.join("doomed")).unwrap());
    f.write("fresh/new.txt", "new\n");
    f.write("keep.txt", "changed\n");
    let after = f.take();

    let restored = f
        .checkpoints
        .restore(&f.isolation, f.id, &f.ws, before.id)
        .unwrap();
    assert_eq!(f.read("doomed/old.txt").as_deref(), Some("old\n"));
    assert_eq!(f.read("keep.txt").as_deref(), Some("keep\n"));
    assert!(
        !f.ws.join("fresh").exists(),
        "the added file's directory is left"
    );
    let mode = std::fs::metadata(f.ws.join("run.sh")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o111,
        0o111
    );
    assert_eq!(restored.removed, ["fresh/new.txt"]);
    assert_eq!(restored.written, ["doomed/old.txt", "keep.txt"]);
    assert!(restored.left_alone.is_empty(), "{:?}", restored.left_alone);
    if let Some(user) = f.isolation.job_user() {
        let meta = std::fs::metadata(f.ws.join("doomed/old.txt")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            user.uid.as_raw()
        );
    }

    // The checkpoint taken before the restore undoes it.
    let back = f.take();
    assert!(
        f.checkpoints
            .changes(f.id, before.id, back.id)
            .unwrap()
            .is_empty()
    );
    f.checkpoints
        .restore(&f.isolation, f.id, &f.ws, restored.checkpoint_id)
        .unwrap();
    let undone = f.take();
    assert!(
        f.checkpoints
            .changes(f.id, after.id, undone.id)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn ignored_paths_heavy_folders_and_files_over_the_cap_are_not_kept_and_a_restore_leaves_them() {
    let f = Fixture::new();
    f.write(".gitignore", "*.log\n/build-output/\n");
    f.write("sub/.gitignore", "secret.txt\n");
    f.write("app.log", "noise\n");
    f.write("build-output/a.bin", "x\n");
    f.write("sub/secret.txt", "s\n");
    f.write("sub/ok.txt", "ok\n");
    for heavy in [
        "node_modules/x/index.js",
        "target/debug/a",
        ".venv/bin/python",
        "deep/node_modules/y.js",
    ] {
        f.write(heavy, "heavy\n");
    }
    let big = "b".repeat(CAP as usize + 1);
    f.write("big.dat", &big);
    let before = f.take();
    let kept: Vec<&str> = before.files.keys().map(String::as_str).collect();
    assert_eq!(kept, [".gitignore", "sub/.gitignore", "sub/ok.txt"]);
    assert_eq!(before.skipped.get("big.dat"), Some(&(CAP + 1)));

    f.write("app.log", "more noise\n");
    f.write("node_modules/x/index.js", "changed\n");
    f.write("big.dat", &"c".repeat(CAP as usize + 2));
    f.write("sub/ok.txt", "changed\n");
    let after = f.take();
    let changes = f.checkpoints.changes(f.id, before.id, after.id).unwrap();
    let paths: Vec<_> = changes
        .iter()
        .map(|c| (c.path.as_str(), c.too_large))
        .collect();
    assert_eq!(paths, [("big.dat", true), ("sub/ok.txt", false)]);

    let restored = f
        .checkpoints
        .restore(&f.isolation, f.id, &f.ws, before.id)
        .unwrap();
    assert_eq!(f.read("sub/ok.txt").as_deref(), Some("ok\n"));
    assert_eq!(f.read("app.log").as_deref(), Some("more noise\n"));
    assert_eq!(
        f.read("node_modules/x/index.js").as_deref(),
        Some("changed\n")
    );
    assert_eq!(f.read("big.dat").unwrap().len(), CAP as usize + 2);
    let left: Vec<_> = restored
        .left_alone
        .iter()
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(left, ["big.dat"], "{:?}", restored.left_alone);

    // A file over the cap made since is not removed by a restore to before it, and is listed.
    f.write("huge.dat", &big);
    let restored = f
        .checkpoints
        .restore(&f.isolation, f.id, &f.ws, before.id)
        .unwrap();
    assert_eq!(f.read("huge.dat").unwrap().len(), CAP as usize + 1);
    let left: Vec<_> = restored
        .left_alone
        .iter()
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(left, ["big.dat", "huge.dat"], "{:?}", restored.left_alone);
}

#[test]
fn a_symlink_is_kept_as_a_link_never_as_what_it_points_to() {
    let f = Fixture::new();
    let outside = f.dir.join("outside-secret");
    std::fs::write(&outside, "root's secret\n").unwrap();
    f.isolation.as_job(|| {
        std::os::unix::fs::symlink(&outside, f.ws.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", f.ws.join("etc-dir")).unwrap();
    });
    let before = f.take();
    assert_eq!(before.files.len(), 2, "{:?}", before.files);
    let after = {
        f.remove("link");
        f.take()
    };
    let diff = f
        .checkpoints
        .diff(f.id, before.id, after.id, None, 1 << 20)
        .unwrap();
    assert!(
        diff.text.contains("deleted file mode 120000"),
        "{}",
        diff.text
    );
    assert!(!diff.text.contains("root's secret"), "{}", diff.text);
    f.checkpoints
        .restore(&f.isolation, f.id, &f.ws, before.id)
        .unwrap();
    assert_eq!(std::fs::read_link(f.ws.join("link")).unwrap(), outside);
}

#[test]
fn a_rewrite_that_keeps_size_and_mtime_is_still_seen() {
    let f = Fixture::new();
    f.write("a.txt", "aaaa\n");
    let reference = f.dir.join("mtime-ref");
    f.run(
        &f.dir,
        &[
            "touch",
            "-r",
            f.ws.join("a.txt").to_str().unwrap(),
            reference.to_str().unwrap(),
        ],
    );
    let before = f.take();
    f.write("a.txt", "bbbb\n");
    f.run(
        &f.dir,
        &[
            "touch",
            "-r",
            reference.to_str().unwrap(),
            f.ws.join("a.txt").to_str().unwrap(),
        ],
    );
    let after = f.take();
    let changes = f.checkpoints.changes(f.id, before.id, after.id).unwrap();
    assert_eq!(
        changes.len(),
        1,
        "a same-size, same-mtime rewrite was missed"
    );
    assert_eq!((changes[0].additions, changes[0].deletions), (1, 1));
}

#[test]
fn an_unknown_checkpoint_is_not_found() {
    let f = Fixture::new();
    let taken = f.take();
    let unknown = otter_core::checkpoint::CheckpointId(uuid::Uuid::new_v4());
    assert!(matches!(
        f.checkpoints.changes(f.id, taken.id, unknown),
        Err(otter_core::checkpoint::CheckpointError::NotFound(id)) if id == unknown
    ));
    f.checkpoints.remove_workspace(f.id).unwrap();
    assert!(matches!(
        f.checkpoints.load(f.id, taken.id),
        Err(otter_core::checkpoint::CheckpointError::NotFound(_))
    ));
}

#[test]
fn a_cut_that_falls_inside_a_character_cuts_at_a_line_and_does_not_panic() {
    let f = Fixture::new();
    let before = f.take();
    f.write("é.txt", &"ééééé\n".repeat(50));
    let after = f.take();
    let whole = f
        .checkpoints
        .diff(f.id, before.id, after.id, None, 1 << 20)
        .unwrap();
    // Every cut point of the first hunk, inside a two-byte character or not.
    for max in 1..whole.text.len().min(200) {
        let cut = f
            .checkpoints
            .diff(f.id, before.id, after.id, None, max)
            .unwrap();
        assert!(cut.truncated, "{max}");
        assert!(
            cut.text.ends_with("ask for one file with ?path=\n"),
            "{max}"
        );
    }
}

impl Fixture {
    /// This workspace's store, as `Checkpoints` lays it out.
    fn store(&self) -> PathBuf {
        self.dir.join("store").join(self.id.to_string())
    }

    /// The objects stored, by the content they hold.
    fn objects(&self) -> Vec<String> {
        let mut found: Vec<String> = snapshot(&self.store().join("objects"))
            .into_iter()
            .map(|(_, bytes)| String::from_utf8(bytes).unwrap())
            .collect();
        found.sort();
        found
    }

    fn sweep(
        &self,
        keep: &[otter_core::checkpoint::CheckpointId],
    ) -> Result<otter_core::checkpoint::Swept, otter_core::checkpoint::CheckpointError> {
        self.checkpoints.sweep(
            self.id,
            &keep.iter().copied().collect(),
            std::time::SystemTime::now(),
            std::time::Duration::from_millis(200),
        )
    }

    /// Three checkpoints: `a.txt` "one", "two", "three" beside an unchanged `b.txt`.
    fn three(&self) -> [otter_core::checkpoint::Manifest; 3] {
        self.write("a.txt", "one\n");
        self.write("b.txt", "shared\n");
        let first = self.take();
        self.write("a.txt", "two\n");
        let second = self.take();
        self.write("a.txt", "three\n");
        let third = self.take();
        [first, second, third]
    }
}

#[test]
fn a_sweep_forgets_what_no_one_keeps_and_what_it_keeps_stays_whole() {
    let f = Fixture::new();
    let [first, second, third] = f.three();
    assert_eq!(f.objects(), ["one\n", "shared\n", "three\n", "two\n"]);

    // `second` is kept by a job; `third` is the latest; `first` no one needs.
    let swept = f.sweep(&[second.id]).unwrap();
    assert_eq!((swept.checkpoints, swept.objects, swept.bytes), (1, 1, 4));
    assert_eq!(f.objects(), ["shared\n", "three\n", "two\n"]);
    assert!(matches!(
        f.checkpoints.load(f.id, first.id),
        Err(otter_core::checkpoint::CheckpointError::NotFound(_))
    ));
    let diff = f
        .checkpoints
        .diff(f.id, second.id, third.id, None, 1 << 20)
        .unwrap();
    assert!(
        diff.text.contains("-two") && diff.text.contains("+three"),
        "{}",
        diff.text
    );
    // `shared` came to `second` and `third` from the stat cache, never written again: still
    // there, and a restore puts it back.
    f.remove("b.txt");
    f.checkpoints
        .restore(&f.isolation, f.id, &f.ws, second.id)
        .unwrap();
    assert_eq!(f.read("a.txt").as_deref(), Some("two\n"));
    assert_eq!(f.read("b.txt").as_deref(), Some("shared\n"));

    // Sweeping again with the same needs takes nothing more of what is needed.
    let again = f.sweep(&[second.id]).unwrap();
    assert!(f.checkpoints.load(f.id, second.id).is_ok());
    assert_eq!(f.objects(), ["shared\n", "three\n", "two\n"], "{again:?}");
}

#[test]
fn a_sweep_cut_off_after_it_deleted_the_manifests_leaves_their_objects_to_the_next() {
    let f = Fixture::new();
    let [first, second, _] = f.three();
    // As a sweep killed between its steps leaves it: `first`'s manifest deleted, its object not.
    std::fs::remove_file(
        f.store()
            .join("checkpoints")
            .join(format!("{}.json", first.id.0)),
    )
    .unwrap();
    assert_eq!(f.objects(), ["one\n", "shared\n", "three\n", "two\n"]);
    let swept = f.sweep(&[second.id]).unwrap();
    assert_eq!((swept.checkpoints, swept.objects, swept.bytes), (0, 1, 4));
    assert_eq!(f.objects(), ["shared\n", "three\n", "two\n"]);
    assert!(f.checkpoints.load(f.id, second.id).is_ok());
}

#[test]
fn a_checkpoint_taken_after_the_cutoff_is_kept_though_no_job_names_it() {
    let f = Fixture::new();
    f.write("a.txt", "one\n");
    let cutoff = std::time::SystemTime::now();
    let young = f.take();
    f.write("a.txt", "two\n");
    f.take();
    let swept = f
        .checkpoints
        .sweep(
            f.id,
            &Default::default(),
            cutoff,
            std::time::Duration::from_millis(200),
        )
        .unwrap();
    assert_eq!(swept, Default::default());
    assert!(f.checkpoints.load(f.id, young.id).is_ok());
    assert_eq!(f.objects(), ["one\n", "two\n"]);
}

#[test]
fn a_store_from_before_objects_were_touched_keeps_every_object_its_kept_checkpoints_name() {
    let f = Fixture::new();
    let [first, second, third] = f.three();
    // As an older Otter left it: no list of untouched manifests, objects as old as their first
    // write (here: very old).
    std::fs::remove_file(f.store().join("untouched")).unwrap();
    for (path, _) in snapshot(&f.store().join("objects")) {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
    }
    let swept = f.sweep(&[second.id]).unwrap();
    assert_eq!((swept.checkpoints, swept.objects), (1, 1), "{swept:?}");
    assert_eq!(f.objects(), ["shared\n", "three\n", "two\n"]);
    assert!(f.checkpoints.load(f.id, first.id).is_err());
    f.checkpoints
        .diff(f.id, second.id, third.id, None, 1 << 20)
        .unwrap();
}

#[test]
fn a_sweep_waits_for_a_take_and_gives_up_in_time() {
    let f = Fixture::new();
    let [first, _, _] = f.three();
    let lock = std::fs::File::open(f.store().join("lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    assert!(matches!(
        f.sweep(&[]),
        Err(otter_core::checkpoint::CheckpointError::Busy)
    ));
    assert!(f.checkpoints.load(f.id, first.id).is_ok());
    drop(held);
    assert_eq!(f.sweep(&[]).unwrap().checkpoints, 2);
}

#[test]
fn sweeps_beside_takes_never_lose_an_object_of_a_checkpoint_they_keep() {
    use std::sync::{Arc, Mutex};
    let f = Arc::new(Fixture::new());
    // Files no take changes: each take goes through them all (the stat cache).
    for i in 0..300 {
        f.write(&format!("many/{i}.txt"), &format!("file {i}\n"));
    }
    // Every object `id` names is in the store.
    let whole = |f: &Fixture, id: otter_core::checkpoint::CheckpointId| {
        let manifest = f.checkpoints.load(f.id, id).unwrap();
        for (path, entry) in &manifest.files {
            let object = f
                .store()
                .join("objects")
                .join(&entry.hash[..2])
                .join(&entry.hash[2..]);
            assert!(object.is_file(), "checkpoint {id} lost {path}");
        }
    };
    // Taken one after another, as a workspace's runs are: (id, taken_at).
    let recorded: Arc<Mutex<Vec<(otter_core::checkpoint::CheckpointId, std::time::SystemTime)>>> =
        Arc::default();
    let taker = {
        let (f, recorded) = (f.clone(), recorded.clone());
        std::thread::spawn(move || {
            for i in 0..150 {
                // Contents come back (an object a forgotten checkpoint held is stored again),
                // some files change every time, most never do (the stat cache).
                f.write("again.txt", &format!("v{}\n", i % 7));
                f.write(&format!("turn/{}.txt", i % 5), &format!("{i}\n"));
                let taken = f.take();
                recorded
                    .lock()
                    .unwrap()
                    .push((taken.id, taken.taken_at.into()));
            }
        })
    };
    let (mut sweeps, mut swept) = (0, otter_core::checkpoint::Swept::default());
    let mut done = false;
    while !done {
        done = taker.is_finished();
        let Some(snapshot) = ({
            let recorded = recorded.lock().unwrap();
            (!recorded.is_empty()).then(|| recorded.clone())
        }) else {
            std::thread::yield_now();
            continue;
        };
        // What the jobs still need: the last five checkpoints recorded; the sweep may take what
        // was taken before the last one recorded (later ones are runs' in progress).
        let keep: std::collections::HashSet<_> =
            snapshot.iter().rev().take(5).map(|(id, _)| *id).collect();
        let older_than = snapshot.last().unwrap().1;
        let this = f
            .checkpoints
            .sweep(f.id, &keep, older_than, std::time::Duration::from_secs(10))
            .unwrap();
        sweeps += 1;
        swept.checkpoints += this.checkpoints;
        swept.objects += this.objects;
        for id in &keep {
            whole(&f, *id);
        }
    }
    taker.join().unwrap();
    assert!(
        sweeps > 1 && swept.checkpoints > 0 && swept.objects > 0,
        "{sweeps} sweeps took {swept:?}"
    );
    let recorded = recorded.lock().unwrap();
    let (last, _) = *recorded.last().unwrap();
    whole(&f, last);
    // And the next take, from the stat cache of the last one, is whole too.
    let next = f.take();
    whole(&f, next.id);
    assert!(
        f.checkpoints
            .changes(f.id, last, next.id)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn sweeping_a_deleted_workspace_makes_nothing_again() {
    let f = Fixture::new();
    f.three();
    f.checkpoints.remove_workspace(f.id).unwrap();
    assert_eq!(f.sweep(&[]).unwrap(), Default::default());
    assert!(!f.store().exists(), "the store stays gone");
}
