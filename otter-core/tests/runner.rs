//! The process runner on real tiny commands: exit codes, both streams, order, timeouts and
//! cancellation that take every process the child started, the output budget.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use otter_core::CgroupRoot;
use otter_core::isolation::{Isolation, Unit, UnitKind, UnitName};
use otter_core::model::OutputStream;
use otter_core::runner::{self, Line, RunOutcome, RunSpec, RunnerError};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Children run as this process's user (the job user is the end-to-end tests' business), in a
/// cgroup where one can be made (as root), else with the marker.
fn isolation() -> &'static Arc<Isolation> {
    static ISOLATION: OnceLock<Arc<Isolation>> = OnceLock::new();
    ISOLATION.get_or_init(|| {
        Arc::new(Isolation::new(None, &CgroupRoot::Auto, "runner-tests").expect("isolation"))
    })
}

/// A fresh unit of `isolation`.
async fn unit_of(isolation: &Arc<Isolation>) -> Arc<Unit> {
    Unit::create(isolation, UnitName::task())
        .await
        .expect("a unit")
}

fn sh(script: &str) -> RunSpec {
    sh_in(script, futures::executor::block_on(unit_of(isolation())))
}

fn sh_in(script: &str, unit: Arc<Unit>) -> RunSpec {
    RunSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: std::env::temp_dir(),
        unit,
        env: vec![("OTTER_RUNNER_TEST".to_owned(), "yes".to_owned())],
        stdout_as: OutputStream::Stdout,
        stderr_as: OutputStream::Stderr,
        timeout: None,
        silence: None,
        kill_grace: Duration::from_millis(500),
        output_budget: None,
        spill: None,
        reap_group_on_exit: true,
    }
}

/// A budget that holds about `n` lines like `line 1000` at once (each is charged its text and
/// what a waiting line costs beyond it).
fn lines_worth(n: usize) -> usize {
    n * runner::line_cost("line 1000")
}

async fn run(spec: &RunSpec) -> (RunOutcome, Vec<Line>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let outcome = runner::run(spec, tx, &CancellationToken::new())
        .await
        .expect("ran");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    (outcome, lines)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

async fn wait_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exit_code_and_both_streams_in_order() {
    let (outcome, lines) = run(&sh(
        "echo a; echo b >&2; echo \"env=$OTTER_RUNNER_TEST\"; printf 'no newline'; exit 3",
    ))
    .await;
    assert_eq!(outcome, RunOutcome::Exited(3));
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == OutputStream::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    let stderr: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == OutputStream::Stderr)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(stdout, ["a", "env=yes", "no newline"]);
    assert_eq!(stderr, ["b"]);
}

#[tokio::test]
async fn stdin_is_empty_and_a_signal_is_reported() {
    let (outcome, lines) = run(&sh("cat; echo after-cat; kill -9 $$")).await;
    assert_eq!(outcome, RunOutcome::Signalled(9));
    assert_eq!(
        lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["after-cat"]
    );
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let mut spec = sh("");
    spec.program = "/nonexistent/program".into();
    let (tx, _rx) = mpsc::unbounded_channel::<Line>();
    let err = runner::run(&spec, tx, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/program"));
}

#[tokio::test]
async fn cancel_kills_the_whole_group_even_what_ignores_sigterm() {
    let spec = sh("trap '' TERM; (trap '' TERM; sleep 300) & echo $!; sleep 300");
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { runner::run(&spec, tx, &cancel).await })
    };
    let child: u32 = rx
        .recv()
        .await
        .expect("the background pid")
        .text
        .parse()
        .unwrap();
    assert!(alive(child));
    cancel.cancel();
    let outcome = task.await.unwrap().unwrap();
    assert_eq!(outcome, RunOutcome::Cancelled);
    wait_gone(child).await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group() {
    let mut spec = sh("sleep 300 & echo $!; wait");
    spec.timeout = Some(Duration::from_millis(300));
    let (outcome, lines) = run(&spec).await;
    assert_eq!(outcome, RunOutcome::TimedOut);
    wait_gone(lines[0].text.parse().unwrap()).await;
}

#[tokio::test]
async fn what_the_child_left_behind_is_reaped_or_kept_as_asked() {
    let (outcome, lines) = run(&sh("sleep 300 >/dev/null 2>&1 & echo $!")).await;
    assert_eq!(outcome, RunOutcome::Exited(0));
    wait_gone(lines[0].text.parse().unwrap()).await;

    // setup.sh's background app must survive its script.
    let mut spec = sh("sleep 300 >/dev/null 2>&1 & echo $!");
    spec.reap_group_on_exit = false;
    let (_, lines) = run(&spec).await;
    let pid: u32 = lines[0].text.parse().unwrap();
    assert!(alive(pid), "a kept background process survives");
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
}

#[tokio::test]
async fn the_output_budget_holds_the_reader_back_without_losing_lines() {
    const LINES: usize = 2000;
    let budget = Arc::new(Semaphore::new(lines_worth(14)));
    let mut spec = sh(&format!(
        "i=0; while [ $i -lt {LINES} ]; do echo \"line $i\"; i=$((i+1)); done"
    ));
    spec.output_budget = Some(budget.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let task = tokio::spawn(async move { runner::run(&spec, tx, &CancellationToken::new()).await });

    // Hold on to what arrives: the budget (about 14 lines) is soon spent and the reader stops
    // taking more.
    let mut held = Vec::new();
    while budget.available_permits() >= runner::line_cost("line 0") {
        held.push(rx.recv().await.expect("a line"));
    }
    assert!(
        held.len() < 20,
        "the reader went past its budget: {}",
        held.len()
    );
    // An absence can only be observed over a window: give the reader 200 ms to overrun.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(line) = rx.try_recv() {
        held.push(line);
    }
    assert!(
        held.len() < 20,
        "lines arrived beyond the budget: {}",
        held.len()
    );

    // Let go: everything arrives, in order, none lost.
    let mut texts: Vec<String> = held.drain(..).map(|l| l.text).collect();
    while let Some(line) = rx.recv().await {
        texts.push(line.text);
    }
    assert_eq!(task.await.unwrap().unwrap(), RunOutcome::Exited(0));
    let expected: Vec<String> = (0..LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, expected);
}

#[tokio::test]
async fn every_line_is_charged_its_text_and_what_a_waiting_line_costs_beyond_it() {
    // Empty lines, a short one, one with invalid bytes (decoded to U+FFFD, longer than read)
    // and a long one, each held in the channel until the run is over.
    let mut spec =
        sh(r"printf '\n\n\nabc\na\377\377b\n'; head -c 100000 /dev/zero | tr '\0' x; echo");
    let budget = Arc::new(Semaphore::new(runner::MAX_LINE_CHARGE));
    spec.output_budget = Some(budget.clone());
    let (outcome, lines) = run(&spec).await;
    assert_eq!(outcome, RunOutcome::Exited(0));
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts[..5], ["", "", "", "abc", "a\u{fffd}\u{fffd}b"]);
    assert_eq!(texts[5].len(), 100_000);
    let mut charged = 0;
    for line in &lines {
        let permits = line.permit.as_ref().expect("charged").num_permits();
        assert_eq!(
            permits,
            line.text.len() + runner::LINE_OVERHEAD_BYTES,
            "{:?}",
            line.text.get(..10)
        );
        assert!(permits >= 128, "an empty line costs far more than nothing");
        assert_eq!(
            line.text.capacity(),
            line.text.len(),
            "charged what it holds"
        );
        charged += permits;
    }
    assert_eq!(
        budget.available_permits(),
        runner::MAX_LINE_CHARGE - charged
    );
    drop(lines);
    assert_eq!(budget.available_permits(), runner::MAX_LINE_CHARGE);
}

/// A child printing `lines` numbered lines to stdout and to stderr, then creating a marker
/// file, run in the background with an output budget of about 14 lines and a spill file of at most
/// `max_bytes` in the directory `spill_in` gives for this run's own fresh directory.
struct Flood {
    dir: std::path::PathBuf,
    marker: std::path::PathBuf,
    lines: usize,
    rx: mpsc::UnboundedReceiver<Line>,
    task: tokio::task::JoinHandle<Result<RunOutcome, RunnerError>>,
}

impl Flood {
    fn start(
        name: &str,
        lines: usize,
        max_bytes: u64,
        spill_in: impl FnOnce(&std::path::Path) -> std::path::PathBuf,
    ) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("otter-spill-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("child-finished");
        let mut spec = sh(&format!(
            "i=0; while [ $i -lt {lines} ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; touch '{}'",
            marker.display()
        ));
        spec.output_budget = Some(Arc::new(Semaphore::new(lines_worth(14))));
        spec.spill = Some(runner::SpillSpec {
            dir: spill_in(&dir),
            max_bytes,
        });
        let (tx, rx) = mpsc::unbounded_channel::<Line>();
        let task =
            tokio::spawn(async move { runner::run(&spec, tx, &CancellationToken::new()).await });
        Self {
            dir,
            marker,
            lines,
            rx,
            task,
        }
    }

    /// Takes the rest of the output, giving back each line's share of the budget as a consumer
    /// does once it has stored the line; then the run must have ended well, the child finished,
    /// and every line of each stream arrived, in order.
    async fn finish(mut self, held: Vec<Line>) {
        let mut lines: Vec<_> = held.into_iter().map(|l| (l.stream, l.text)).collect();
        while let Some(line) = self.rx.recv().await {
            lines.push((line.stream, line.text));
        }
        assert_eq!(self.task.await.unwrap().unwrap(), RunOutcome::Exited(0));
        assert!(self.marker.exists());
        for (stream, prefix) in [(OutputStream::Stdout, "out"), (OutputStream::Stderr, "err")] {
            let got: Vec<&str> = lines
                .iter()
                .filter(|l| l.0 == stream)
                .map(|l| l.1.as_str())
                .collect();
            let want: Vec<String> = (0..self.lines).map(|i| format!("{prefix} {i}")).collect();
            assert_eq!(got, want, "{prefix}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn past_the_budget_lines_wait_on_disk_and_the_child_is_not_held_up() {
    let mut run = Flood::start("runs", 2000, 1024 * 1024, |d| d.to_path_buf());

    // Hold on to what arrives, so the budget (about 14 lines) stays spent: the child still gets
    // to write everything and finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !run.marker.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child finished while its lines were held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut held = Vec::new();
    while let Ok(line) = run.rx.try_recv() {
        held.push(line);
    }
    assert!(held.len() < 30, "past the budget: {}", held.len());
    assert!(
        !run.task.is_finished(),
        "the run ended before its lines were handed on"
    );
    // The spill file was unlinked when created: only the marker is there.
    let names: Vec<_> = std::fs::read_dir(&run.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["child-finished"]);

    // Let go: everything arrives, each stream in order, and only then does the run end.
    run.finish(held).await;
}

#[tokio::test]
async fn a_full_spill_file_holds_the_child_back_without_losing_lines() {
    // About 360 KB: more than the budget, the file and the two pipes' 64 KiB together.
    let mut run = Flood::start("full", 20_000, 512, |d| d.to_path_buf());
    let mut held = vec![run.rx.recv().await.expect("a line")];
    // An absence can only be observed over a window: give the child 300 ms to get past the
    // budget and the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.marker.exists(), "the child was not held back");
    while let Ok(line) = run.rx.try_recv() {
        held.push(line);
    }
    run.finish(held).await;
}

#[tokio::test]
async fn a_spill_directory_that_fails_falls_back_to_waiting() {
    let run = Flood::start("fails", 20_000, 1024 * 1024, |d| d.join("does-not-exist"));
    run.finish(Vec::new()).await;
}

#[tokio::test]
async fn output_ends_even_when_a_kept_background_process_holds_the_pipes() {
    // setup.sh starting its app without redirecting it: the app inherits the pipes.
    let mut spec = sh("sleep 300 & echo $!");
    spec.reap_group_on_exit = false;
    // Kept alive here: a unit dropped by its owner is killed.
    let _unit = spec.unit.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let task = tokio::spawn(async move { runner::run(&spec, tx, &CancellationToken::new()).await });
    let pid: u32 = rx.recv().await.expect("the pid").text.parse().unwrap();
    // The consumer sees the end of the output (the sink would otherwise wait for the app).
    let end = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert!(matches!(end, Ok(None)), "the output did not end");
    assert_eq!(task.await.unwrap().unwrap(), RunOutcome::Exited(0));
    assert!(alive(pid), "the kept process survives");
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
}

/// Every containment this machine offers: the cgroup where one can be made (as root, with a
/// writable cgroup v2), and the marker everywhere.
fn containments() -> Vec<Arc<Isolation>> {
    let mut all = vec![Arc::new(
        Isolation::new(None, &CgroupRoot::None, "runner-tests").expect("marker isolation"),
    )];
    if matches!(
        isolation().containment(),
        otter_core::isolation::Containment::Cgroup { .. }
    ) {
        all.push(isolation().clone());
    }
    all
}

/// Three ways out of the process group, each printing the pid that ends up sleeping before the
/// script goes on: a background `setsid`, `setsid -f` (which forks), and a program that moves
/// itself to a group of its own before it execs (forked by python, which prints its pid).
const ESCAPES: &str = "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!
setsid -f sh -c 'echo $$; exec sleep 300 >/dev/null 2>&1' </dev/null
python3 -c 'import os
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execvp(\"sh\", [\"sh\", \"-c\", \"exec sleep 300 >/dev/null 2>&1\"])
print(pid, flush=True)' </dev/null
";

/// Reads the three pids [`ESCAPES`] prints.
async fn escaped_pids(rx: &mut mpsc::UnboundedReceiver<Line>) -> Vec<u32> {
    let mut pids = Vec::new();
    while pids.len() < 3 {
        let line = rx.recv().await.expect("an escaped pid");
        if let Ok(pid) = line.text.trim().parse() {
            pids.push(pid);
        }
    }
    for pid in &pids {
        assert!(alive(*pid), "{pid} runs");
    }
    pids
}

#[tokio::test]
async fn what_leaves_the_group_is_killed_at_the_timeout_on_cancel_and_at_the_exit() {
    for isolation in containments() {
        let what = format!("{:?}", isolation.containment());
        // The timeout.
        // The unit is held here, so that only the runner's own stop can kill (a unit dropped
        // by its owner is killed too).
        let unit = unit_of(&isolation).await;
        let mut spec = sh_in(&format!("{ESCAPES}sleep 300"), unit.clone());
        spec.timeout = Some(Duration::from_secs(1));
        let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
        let task =
            tokio::spawn(async move { runner::run(&spec, tx, &CancellationToken::new()).await });
        let pids = escaped_pids(&mut rx).await;
        assert_eq!(task.await.unwrap().unwrap(), RunOutcome::TimedOut, "{what}");
        for pid in pids {
            wait_gone(pid).await;
        }

        // A cancel.
        let unit = unit_of(&isolation).await;
        let spec = sh_in(&format!("{ESCAPES}sleep 300"), unit.clone());
        let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
        let cancel = CancellationToken::new();
        let task = {
            let cancel = cancel.clone();
            tokio::spawn(async move { runner::run(&spec, tx, &cancel).await })
        };
        let pids = escaped_pids(&mut rx).await;
        cancel.cancel();
        assert_eq!(
            task.await.unwrap().unwrap(),
            RunOutcome::Cancelled,
            "{what}"
        );
        for pid in pids {
            wait_gone(pid).await;
        }

        // The child's own exit.
        let unit = unit_of(&isolation).await;
        let spec = sh_in(ESCAPES, unit.clone());
        let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
        let task =
            tokio::spawn(async move { runner::run(&spec, tx, &CancellationToken::new()).await });
        let pids = escaped_pids(&mut rx).await;
        assert_eq!(
            task.await.unwrap().unwrap(),
            RunOutcome::Exited(0),
            "{what}"
        );
        for pid in pids {
            wait_gone(pid).await;
        }
        drop(unit);
    }
}

#[tokio::test]
async fn a_foreground_setsid_is_stopped_at_the_timeout() {
    for isolation in containments() {
        // The trap keeps sh from exec'ing its last command, as the command endpoints' script
        // does: sh waits for a child in a session of its own.
        let mut spec = sh_in(
            "trap 'echo done' EXIT; setsid sh -c 'echo $$; exec sleep 300 >/dev/null'",
            unit_of(&isolation).await,
        );
        spec.timeout = Some(Duration::from_secs(1));
        let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
        let task =
            tokio::spawn(async move { runner::run(&spec, tx, &CancellationToken::new()).await });
        let pid: u32 = rx.recv().await.expect("the pid").text.parse().unwrap();
        assert_eq!(task.await.unwrap().unwrap(), RunOutcome::TimedOut);
        wait_gone(pid).await;
    }
}

#[tokio::test]
async fn a_kept_unit_leaves_its_processes_running_and_a_closed_one_does_not() {
    for isolation in containments() {
        let unit = unit_of(&isolation).await;
        let mut spec = sh_in(
            "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!",
            unit.clone(),
        );
        spec.reap_group_on_exit = false;
        let (_, lines) = run(&spec).await;
        let pid: u32 = lines[0].text.parse().unwrap();
        unit.keep(UnitName::task()).await.expect("kept");
        drop(spec);
        drop(unit);
        assert!(alive(pid), "a kept process survives its unit");
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
        wait_gone(pid).await;
        // A kept unit has no owner: a sweep finds it (and removes it once empty).
        isolation.sweep(&[UnitKind::Task]).await;

        let unit = unit_of(&isolation).await;
        let mut spec = sh_in(
            "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!",
            unit.clone(),
        );
        spec.reap_group_on_exit = false;
        let (_, lines) = run(&spec).await;
        let pid: u32 = lines[0].text.parse().unwrap();
        assert!(alive(pid));
        unit.close().await;
        wait_gone(pid).await;
    }
}

/// A child is in its unit from its start (born in the unit's cgroup, or carrying the marker),
/// leads a process group of its own, and gets the default signals: nothing blocked, SIGPIPE
/// not ignored, whatever this process does with them.
#[tokio::test]
async fn a_child_starts_in_its_unit_with_default_signals() {
    for isolation in containments() {
        let what = format!("{:?}", isolation.containment());
        let unit = unit_of(&isolation).await;
        let name = unit.name().as_str().to_owned();
        let spec = sh_in(
            "cat /proc/$$/cgroup; echo \"marker=$OTTER_UNIT\"
             echo \"group=$(awk '{print $5}' /proc/$$/stat) pid=$$\"",
            unit,
        );
        let (outcome, lines) = run(&spec).await;
        assert_eq!(outcome, RunOutcome::Exited(0), "{what}");
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        match isolation.containment() {
            otter_core::isolation::Containment::Cgroup { .. } => assert!(
                text.iter()
                    .any(|l| l.starts_with("0::/") && l.ends_with(&format!("/{name}"))),
                "{what}: {text:?}"
            ),
            otter_core::isolation::Containment::Marker => {
                assert!(
                    text.contains(&format!("marker={name}").as_str()),
                    "{text:?}"
                )
            }
        }
        let group = text
            .iter()
            .find(|l| l.starts_with("group="))
            .expect("group");
        let (pgid, pid) = group.split_once(' ').expect("two fields");
        assert_eq!(&pgid["group=".len()..], &pid["pid=".len()..], "{what}");
        // The program itself, not a shell, which changes its mask around each fork.
        let mut spec = sh_in("", unit_of(&isolation).await);
        spec.program = "grep".into();
        spec.args = ["-E", "^Sig(Blk|Ign)", "/proc/self/status"]
            .map(Into::into)
            .into();
        let (_, lines) = run(&spec).await;
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let ignored = text
            .iter()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .expect("SigIgn");
        let ignored = u64::from_str_radix(ignored, 16).expect("a mask");
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "{what}: {text:?}");
        assert!(
            text.contains(&"SigBlk:\t0000000000000000"),
            "{what}: {text:?}"
        );
    }
}

/// A unit stays usable after it was killed: the next child started in it runs (vibe's unit is
/// emptied when vibe exits, and `setup.sh` starts in it after).
#[tokio::test]
async fn a_child_starts_in_a_unit_that_was_killed_before() {
    for isolation in containments() {
        let what = format!("{:?}", isolation.containment());
        let unit = unit_of(&isolation).await;
        let (first, _) = run(&sh_in("sleep 300 & echo started", unit.clone())).await;
        assert_eq!(first, RunOutcome::Exited(0), "{what}");
        let (second, lines) = run(&sh_in("echo second", unit.clone())).await;
        assert_eq!(second, RunOutcome::Exited(0), "{what}");
        assert_eq!(
            lines.first().map(|l| l.text.as_str()),
            Some("second"),
            "{what}"
        );
        unit.close().await;
    }
}
