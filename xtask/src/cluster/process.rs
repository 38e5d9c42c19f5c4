//! The cluster's processes: started detached (own process group, log files) so they outlive
//! xtask, and only ever signalled after `/proc` confirms the recorded pid still runs the
//! binary we started, so a reused pid is never killed.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Signal, WaitOptions};

use super::binaries::Binaries;
use super::state::Proc;
use crate::pid::{kernel_pid, signal};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a component in its own process group (so a terminal's Ctrl-C on xtask does not
/// reach it), stdin closed, stdout+stderr into `logs/<name>.log`.
pub(super) fn spawn(bins: &Binaries, name: &str, logs: &Path, args: &[String]) -> Result<Proc> {
    spawn_program(&bins.path(name), name, logs, args)
}

/// [`spawn`] for a program outside the Go-built binaries (containerd).
pub(super) fn spawn_program(
    program: &Path,
    name: &str,
    logs: &Path,
    args: &[String],
) -> Result<Proc> {
    use std::os::unix::process::CommandExt;
    let log_path = logs.join(format!("{name}.log"));
    // Appended: a component started again keeps its first life's log for post-mortems.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    eprintln!(
        "cluster: started {name} (pid {}), log {}",
        child.id(),
        log_path.display()
    );
    // The child is not waited for here: it outlives xtask. `down` stops it by pid.
    Ok(Proc {
        name: name.to_owned(),
        pid: child.id(),
        program: program.to_owned(),
        args: args.to_vec(),
    })
}

/// True if `pid` is a live (not zombie) process running the expected binary.
pub(super) fn process_matches(p: &Proc) -> bool {
    reap(p.pid);
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", p.pid)) else {
        return false;
    };
    // Field 3, after the parenthesised command name: Z = zombie, X = dead.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", p.pid)) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    if argv0.is_empty() {
        // Seen once right after spawn: the cmdline is not readable yet, but the process lives.
        return true;
    }
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(argv0))
        .file_name()
        .is_some_and(|n| n == p.name.as_str())
}

/// Collects the exit status if `pid` is our own child that has exited (when `up` and `down`
/// run in one process); a no-op for processes that are not our children.
fn reap(pid: u32) {
    if let Some(pid) = kernel_pid(pid) {
        // ECHILD for processes that are not our children: nothing to collect.
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
    }
}

/// Sends `sig` to `p`, then waits up to STOP_TIMEOUT for it to go; true if it went.
fn signal_and_wait(p: &Proc, sig: Signal) -> bool {
    signal(p.pid, sig);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while process_matches(p) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    !process_matches(p)
}

/// SIGTERM, then SIGKILL after STOP_TIMEOUT; last started first.
pub(super) fn stop_processes(procs: &[Proc]) -> Result<()> {
    for p in procs.iter().rev() {
        if !process_matches(p) {
            continue;
        }
        if signal_and_wait(p, Signal::TERM) {
            continue;
        }
        eprintln!(
            "cluster: {} (pid {}) ignored SIGTERM; sending SIGKILL",
            p.name, p.pid
        );
        if !signal_and_wait(p, Signal::KILL) {
            bail!("{} (pid {}) survived SIGKILL", p.name, p.pid);
        }
    }
    Ok(())
}

/// Polls `ready` until it holds; fails early if the process died, and after READY_TIMEOUT,
/// with the tail of the component's log either way.
pub(super) fn wait_until(
    p: &Proc,
    logs: &Path,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if ready() {
            eprintln!(
                "cluster: {what} ready after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let log = logs.join(format!("{}.log", p.name));
        if !process_matches(p) {
            bail!(
                "{} (pid {}) exited before {what} was ready; last lines of {}:\n{}",
                p.name,
                p.pid,
                log.display(),
                tail(&log, 40)
            );
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "{what} not ready after {}s; last lines of {}:\n{}",
                READY_TIMEOUT.as_secs(),
                log.display(),
                tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The last `lines` lines of the file at `path` (or why it cannot be read).
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_signal_to_pid_zero_or_negative_ids() {
        assert!(kernel_pid(0).is_none());
        assert!(kernel_pid(u32::MAX).is_none());
        assert_eq!(kernel_pid(42).map(|p| p.as_raw_nonzero().get()), Some(42));
    }

    #[test]
    fn a_spawned_child_is_seen_then_stopped_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let p = spawn_program(
            Path::new("/bin/sleep"),
            "sleep",
            dir.path(),
            &["30".to_owned()],
        )
        .unwrap();
        assert!(process_matches(&p));
        stop_processes(std::slice::from_ref(&p)).unwrap();
        assert!(!process_matches(&p));
    }
}
