//! What a job can and cannot reach (docs/workspace-trust-model.md, "What a job can reach"),
//! and that nothing a run starts outlives it: each line of the trust model tried by the
//! stand-in's probe (as vibe and as `setup.sh`), each way out of the process group tried on
//! cancel, at the time limit, at vibe's exit and when the worker is killed with SIGKILL, with
//! cgroups and with the environment marker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use otter_core::isolation::JobUser;
use otter_testkit::{TestApp, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Worker, WorkerProcess, events, fake_vibe, finished, lines, process_gone, read_pid,
    recorded_run, scenario, status_is, submit,
};

/// The job user this test process's Otter runs jobs as, when it is root.
fn job_user() -> Option<JobUser> {
    JobUser::resolve("otter-job")
        .expect("as root, the job user otter-job must exist (scripts/services.sh start creates it)")
}

/// The probe's report, as vibe answered it or as `setup.sh` printed it.
fn report_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a probe report ({e}): {text}"))
}

/// What every probe of a job must find: nothing of Otter's secrets, no way into the API but
/// its own job's preview URL.
fn assert_reached_nothing(who: &str, report: &Value, uid: u32) {
    assert_eq!(
        report["uid"], uid,
        "{who} ran as the expected user: {report:#}"
    );
    for name in report["own_env"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            ![
                "OTTER_API_TOKENS",
                "OTTER_DATABASE_URL",
                "DATABASE_URL",
                "OTTER_REDIS_URL",
                "REDIS_URL"
            ]
            .contains(&name),
            "{who} was given {name}: {report:#}"
        );
    }
    for (pid, tried) in report["pids"].as_object().unwrap() {
        for what in ["environ", "mem"] {
            assert_ne!(
                tried[what], "read",
                "{who} read /proc/{pid}/{what}: {report:#}"
            );
        }
    }
    for (path, tried) in report["files"].as_object().unwrap() {
        assert_ne!(*tried, "read", "{who} read {path}: {report:#}");
    }
    assert_eq!(
        report["found"],
        json!([]),
        "{who} found secrets: {report:#}"
    );
    for call in report["api"].as_array().unwrap() {
        if call["call"] != "POST /v1/jobs/{id}/preview-url" {
            assert_eq!(call["status"], 401, "{who}: {call} {report:#}");
        }
    }
}

#[tokio::test]
async fn a_job_run_by_a_root_worker_reaches_none_of_otters_secrets() {
    let Some(user) = job_user() else {
        eprintln!(
            "not root: jobs run as the worker's own user; see \
             a_worker_that_is_not_root_keeps_its_jobs_out_of_its_process"
        );
        return;
    };
    let admin = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", &admin)]).await;
    let ws = app.workspace("ws").await;
    // A file only root may read, such as an operator's env file.
    let secrets = app.env.dir.join("otter.env");
    std::fs::write(&secrets, format!("OTTER_API_TOKENS={admin}\n")).unwrap();
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // This process is the server (in-process), and holds DATABASE_URL and REDIS_URL.
    let server = std::process::id().to_string();
    let files = secrets.display().to_string();
    // setup.sh runs the same probe (its parent is the worker too).
    let setup = format!(
        "#!/bin/sh\nexport OTTER_API_BASE_URL={base} FAKE_VIBE_PROBE_PIDS={server} \
         FAKE_VIBE_PROBE_FILES={files}\nexec {probe} --probe\n",
        base = app.base,
        probe = fake_vibe(),
    );
    let script = Path::new(ws["path"].as_str().unwrap()).join("setup.sh");
    std::fs::write(&script, setup).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // A careless operator gave the worker an API token, which it does not need.
    let extra = scenario(
        "probe",
        &[
            &format!("FAKE_VIBE_PROBE_PIDS={server}"),
            &format!("FAKE_VIBE_PROBE_FILES={files}"),
        ],
    );
    let worker = WorkerProcess::spawn(
        &app,
        "careless",
        &[
            ("OTTER_API_TOKENS", &admin),
            ("OTTER_API_BASE_URL", &app.base),
            ("OTTER_VIBE_EXTRA_ENV", &extra),
        ],
    );
    let job = finished(
        &app,
        &submit(&app, &ws, "find the secrets", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // The secrets are there to be found, for whoever may read the worker's environment.
    let environ = std::fs::read(format!("/proc/{}/environ", worker.pid())).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains(&admin));

    let vibe = report_of(job["output"]["final_text"].as_str().unwrap());
    assert_reached_nothing("vibe", &vibe, user.uid.as_raw());
    // Its parent is the worker.
    assert_eq!(
        vibe["pids"][worker.pid().to_string()]["environ"]
            .as_str()
            .map(|e| e.contains("denied")),
        Some(true),
        "{vibe:#}"
    );
    let mut own: Vec<&str> = vibe["own_env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    own.sort_unstable();
    assert_eq!(
        own,
        ["OTTER_API_BASE_URL", "OTTER_API_TOKEN", "OTTER_JOB_ID"],
        "{vibe:#}"
    );
    let preview = vibe["api"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call"] == "POST /v1/jobs/{id}/preview-url")
        .expect("the preview call");
    assert_eq!(
        preview["status"], 200,
        "its job token opens its preview-url route"
    );
    assert_eq!(job["preview_url"], "http://127.0.0.1:9/probed");

    let events = events(&app, &job).await;
    let setup = lines(&events, "setup");
    let setup = report_of(setup.first().expect("setup.sh's report"));
    assert_reached_nothing("setup.sh", &setup, user.uid.as_raw());

    drop(worker);
    app.assert_no_processes_left().await;
}

/// A process that lives until dropped.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_that_is_not_root_keeps_its_jobs_out_of_its_process() {
    use std::os::unix::process::CommandExt;
    let admin = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_with(&[("OTTER_API_TOKENS", &admin)]).await;
    let ws = app.workspace("ws").await;
    // As root, the worker runs as the job user: a worker that is not root, whose jobs run as
    // its own user.
    let ids = job_user().map(|u| (u.uid.as_raw(), u.gid.as_raw()));
    let uid = ids.map_or_else(|| nix::unistd::getuid().as_raw(), |(uid, _)| uid);
    // A process of the same user that did not make itself non-dumpable: the probe reads it,
    // so what it cannot read of the worker is the worker's doing.
    let decoy = format!("decoy-{}", uuid::Uuid::new_v4().simple());
    let mut control = std::process::Command::new("sleep");
    control
        .arg("300")
        .env("OTTER_API_TOKENS", &decoy)
        .env("OTTER_TEST_DIR", &app.env.dir);
    if let Some((uid, gid)) = ids {
        control.uid(uid).gid(gid);
    }
    let control = Sleeper(control.spawn().unwrap());
    let worker = WorkerProcess::spawn_as(
        &app,
        "plain",
        &[
            ("OTTER_API_TOKENS", &admin),
            ("OTTER_API_BASE_URL", &app.base),
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario(
                    "probe",
                    &[&format!(
                        "FAKE_VIBE_PROBE_PIDS={}:{}",
                        std::process::id(),
                        control.0.id()
                    )],
                ),
            ),
        ],
        ids,
    );
    let job = finished(
        &app,
        &submit(&app, &ws, "find the secrets", json!({})).await,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let report = report_of(job["output"]["final_text"].as_str().unwrap());
    assert_eq!(report["uid"], uid, "{report:#}");
    let tried = |pid: u32| &report["pids"][pid.to_string()];
    for what in ["environ", "mem"] {
        assert_ne!(
            tried(worker.pid())[what],
            "read",
            "the worker's {what}: {report:#}"
        );
    }
    assert_eq!(
        tried(control.0.id())["environ"],
        "read",
        "the control: {report:#}"
    );
    // What it found is the control's decoy, never the worker's token.
    let worker_pid = worker.pid().to_string();
    let found = report["found"].as_array().unwrap();
    assert!(
        found.iter().any(|f| f["value"] == decoy.as_str()),
        "the scan reads what it may: {report:#}"
    );
    assert!(
        found.iter().all(|f| f["pid"] != worker_pid.as_str()),
        "{report:#}"
    );
    assert!(!report.to_string().contains(&admin), "{report:#}");
    for call in report["api"].as_array().unwrap() {
        if call["call"] != "POST /v1/jobs/{id}/preview-url" {
            assert_eq!(call["status"], 401, "{call}");
        }
    }
    drop((worker, control));
    app.assert_no_processes_left().await;
}

/// A script that leaves the process group three ways (a background `setsid`, `setsid -f`, and
/// a program that moves itself to a group of its own and execs) and writes each escaped pid to
/// `<dir>/$OTTER_JOB_ID/<name>.pid`.
fn escape_script(dir: &Path) -> PathBuf {
    let script = dir.join("escape.sh");
    let body = format!(
        r#"d={dir}/$OTTER_JOB_ID
mkdir -p "$d"
setsid sleep 300 >/dev/null 2>&1 </dev/null &
echo $! > "$d/setsid.tmp" && mv "$d/setsid.tmp" "$d/setsid.pid"
setsid -f sh -c 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1"; exec sleep 300' sh "$d/setsid-f.pid" >/dev/null 2>&1 </dev/null
python3 -c 'import os, sys
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execvp("sleep", ["sleep", "300"])
open(sys.argv[1] + ".tmp", "w").write(str(pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])' "$d/setpgid.pid" >/dev/null 2>&1 </dev/null
"#,
        dir = dir.display()
    );
    std::fs::write(&script, body).unwrap();
    script
}

/// The escaped pids of `job`, once all three are written.
async fn escaped(dir: &Path, job: &Value) -> Vec<u32> {
    let d = dir.join(job["id"].as_str().unwrap());
    let mut pids = Vec::new();
    for name in ["setsid", "setsid-f", "setpgid"] {
        pids.push(read_pid(&d.join(format!("{name}.pid"))).await);
    }
    for pid in &pids {
        assert!(!process_gone(*pid), "{pid} escaped and runs");
    }
    pids
}

async fn all_gone(pids: &[u32], when: &str) {
    for pid in pids {
        let pid = *pid;
        eventually(
            Duration::from_secs(10),
            &format!("{pid} to be gone {when}"),
            || async move { process_gone(pid).then_some(()) },
        )
        .await;
    }
}

/// Cancel, time limit, vibe's own exit: in each case nothing vibe started survives the run.
async fn what_vibe_started_dies_with_its_run(cgroup_root: &str) {
    // Cancelled.
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let script = escape_script(&app.env.dir).display().to_string();
    let knob = format!("FAKE_VIBE_GRANDCHILD_SCRIPT={script}");
    let worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &scenario("grandchild", &[&knob])),
            ("OTTER_CANCEL_GRACE", "1s"),
            ("OTTER_CGROUP_ROOT", cgroup_root),
        ],
    )
    .await;
    let job = submit(&app, &ws, "escape, then cancel", json!({})).await;
    let pids = escaped(&app.env.dir, &job).await;
    let (status, _) = app
        .post(
            &format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(finished(&app, &job).await["status"], "cancelled");
    all_gone(&pids, "after the cancel").await;
    worker.stop().await;
    app.assert_no_processes_left().await;

    // Past its time limit (vibe stops itself there).
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let script = escape_script(&app.env.dir).display().to_string();
    let knob = format!("FAKE_VIBE_GRANDCHILD_SCRIPT={script}");
    let worker = Worker::start(
        &app,
        &[
            ("OTTER_VIBE_EXTRA_ENV", &scenario("grandchild", &[&knob])),
            ("OTTER_JOB_TIMEOUT", "2s"),
            ("OTTER_CGROUP_ROOT", cgroup_root),
        ],
    )
    .await;
    let job = submit(&app, &ws, "escape, then run out of time", json!({})).await;
    let pids = escaped(&app.env.dir, &job).await;
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "failed", "{done}");
    all_gone(&pids, "after the time limit").await;
    worker.stop().await;
    app.assert_no_processes_left().await;

    // Vibe exits by itself, successfully.
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let script = escape_script(&app.env.dir).display().to_string();
    let knob = format!("FAKE_VIBE_GRANDCHILD_SCRIPT={script}");
    let worker = Worker::start(
        &app,
        &[
            (
                "OTTER_VIBE_EXTRA_ENV",
                &scenario("grandchild-exit", &[&knob]),
            ),
            ("OTTER_CGROUP_ROOT", cgroup_root),
        ],
    )
    .await;
    let job = submit(&app, &ws, "escape, then finish", json!({})).await;
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The pids were written before vibe went on (the stand-in waits for the script).
    let d = app.env.dir.join(job["id"].as_str().unwrap());
    let pids: Vec<u32> = ["setsid", "setsid-f", "setpgid"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(d.join(format!("{n}.pid")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    all_gone(&pids, "after vibe exited").await;
    worker.stop().await;
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn what_vibe_started_dies_with_its_run_in_a_cgroup() {
    what_vibe_started_dies_with_its_run("auto").await;
}

#[tokio::test]
async fn what_vibe_started_dies_with_its_run_by_its_marker() {
    what_vibe_started_dies_with_its_run("none").await;
}

/// A worker killed with SIGKILL: its vibe dies with it, what vibe started is killed before the
/// job runs again on this host, and the rerun never runs beside the lost run.
async fn a_run_dies_with_its_worker(cgroup_root: &str) {
    let app = TestApp::spawn().await;
    let ws = app.workspace("ws").await;
    let record = app.env.dir.join("record.jsonl");
    let script = escape_script(&app.env.dir).display().to_string();
    let timing = [
        ("OTTER_LEASE_TTL", "2s"),
        ("OTTER_RECONCILE_INTERVAL", "300ms"),
        ("OTTER_CGROUP_ROOT", cgroup_root),
    ];
    // A quiet run: vibe says nothing once started, so no broken pipe would ever stop it.
    let quiet = scenario(
        "grandchild",
        &[
            &format!("FAKE_VIBE_GRANDCHILD_SCRIPT={script}"),
            &format!("FAKE_VIBE_RECORD={}", record.display()),
        ],
    );
    let mut extra = timing.to_vec();
    extra.push(("OTTER_VIBE_EXTRA_ENV", &quiet));
    let mut doomed = WorkerProcess::spawn(&app, "doomed", &extra);
    let job = submit(&app, &ws, "survive your worker", json!({})).await;
    status_is(&app, &job, "running").await;
    let pids = escaped(&app.env.dir, &job).await;
    let vibe = recorded_run(&record)["pid"].as_u64().unwrap() as u32;
    doomed.kill9();
    all_gone(&[vibe], "once its worker was killed").await;

    // The rerun's first act: note which of the lost run's processes still run (a zombie waiting
    // for init to reap it runs no more).
    let check = app.env.dir.join("check.sh");
    let alive = app.env.dir.join("alive-at-rerun");
    let checked = app.env.dir.join("checked");
    let pid_list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &check,
        format!(
            "for p in {pid_list}; do\n  s=$(cut -d')' -f2 /proc/$p/stat 2>/dev/null | cut -c2)\n  \
             [ -n \"$s\" ] && [ \"$s\" != Z ] && echo $p >> {alive}\ndone\ntouch {checked}\n",
            alive = alive.display(),
            checked = checked.display()
        ),
    )
    .unwrap();
    let rerun = scenario(
        "grandchild-exit",
        &[&format!("FAKE_VIBE_GRANDCHILD_SCRIPT={}", check.display())],
    );
    let mut extra = timing.to_vec();
    extra.push(("OTTER_VIBE_EXTRA_ENV", &rerun));
    let survivor = WorkerProcess::spawn(&app, "survivor", &extra);
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert!(checked.exists(), "the rerun ran its check");
    assert!(
        !alive.exists(),
        "the rerun started beside the lost run's {}",
        std::fs::read_to_string(&alive).unwrap_or_default()
    );
    all_gone(&pids, "after the rerun").await;
    drop(survivor);
    app.assert_no_processes_left().await;
}

#[tokio::test]
async fn a_run_dies_with_its_worker_in_a_cgroup() {
    a_run_dies_with_its_worker("auto").await;
}

#[tokio::test]
async fn a_run_dies_with_its_worker_by_its_marker() {
    a_run_dies_with_its_worker("none").await;
}

#[tokio::test]
async fn what_a_successful_setup_sh_started_keeps_running_and_nothing_else() {
    let (app, ws, worker) = crate::harness::app_with_worker("tools", &[]).await;
    let root = PathBuf::from(ws["path"].as_str().unwrap());
    // The app in its own session, as a daemonizing server would be.
    std::fs::write(
        root.join("setup.sh"),
        "#!/bin/sh\nsetsid sleep 300 >/dev/null 2>&1 </dev/null &\necho \"app pid $!\"\n",
    )
    .unwrap();
    let job = finished(&app, &submit(&app, &ws, "start the app", json!({})).await).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = events(&app, &job).await;
    let pid: u32 = lines(&events, "setup")
        .iter()
        .find_map(|l| l.strip_prefix("app pid "))
        .unwrap_or_else(|| panic!("setup's line: {job} {events:?}"))
        .parse()
        .unwrap();
    assert!(!process_gone(pid), "the app outlives its job");
    worker.stop().await;
    // Still running after its worker stopped: it is the workspace's app now.
    assert!(!process_gone(pid), "the app outlives its worker");
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
    app.assert_no_processes_left().await;
}
