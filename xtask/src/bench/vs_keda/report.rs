//! The one table of the run, both systems per row: printed, and written into
//! docs/benchmarks.md between markers (section "Side by side with KEDA").

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;

use super::Settings;
use super::steps::{StepFigures, percentile};
use super::usage::{Requests, Usage};

/// Where the generated part of the section starts and ends in docs/benchmarks.md.
const BEGIN: &str = "<!-- vs-keda:begin: written by `cargo xtask bench --vs-keda`, do not edit -->";
const END: &str = "<!-- vs-keda:end -->";
const SECTION: &str = "## Side by side with KEDA";

/// What each system did with a step's running jobs.
#[derive(Debug, Clone, Default)]
pub(super) struct RunningFigures {
    /// Jobs that went running.
    pub(super) jobs: usize,
    /// How long the bench watched.
    pub(super) watched: Duration,
    /// Jobs created meanwhile, per system.
    pub(super) new_jobs: [usize; 2],
    /// Jobs of the running jobs still alive at the end, per system.
    pub(super) kept: [usize; 2],
}

/// What each system did with the Jobs of jobs cancelled before any runner took them.
#[derive(Debug, Clone, Default)]
pub(super) struct CancelFigures {
    /// Jobs cancelled.
    pub(super) jobs: usize,
    /// How long after the cancel the bench looked.
    pub(super) watched: Duration,
    /// Their Jobs (KEDA: the Jobs made in the step), per system.
    pub(super) had: [usize; 2],
    /// Of those, deleted, per system.
    pub(super) deleted: [usize; 2],
    /// The first and last deletion, seconds after the cancel, per system.
    pub(super) deleted_after: [Option<(f64, f64)>; 2],
}

/// Jobs and registrations at one moment of the cleanup.
#[derive(Debug, Clone, Default)]
pub(super) struct EndState {
    /// Runner Jobs that exist and have not finished, per system.
    pub(super) unfinished: [usize; 2],
    /// Runner Jobs that exist and finished (Complete or Failed), per system.
    pub(super) finished: [usize; 2],
    /// Runner registrations of the system's organization in the stand-in.
    pub(super) registrations: [usize; 2],
}

/// Every figure of one run.
#[derive(Debug, Clone, Default)]
pub(super) struct Figures {
    pub(super) burst: StepFigures,
    pub(super) trickle: StepFigures,
    pub(super) cancel: StepFigures,
    pub(super) after_cancel: StepFigures,
    pub(super) running: RunningFigures,
    pub(super) cancelled: CancelFigures,
    /// Jobs added over the sequence (one Job each is ideal).
    pub(super) ideal_total: usize,
    pub(super) created_total: [usize; 2],
    /// The most jobs waiting or running at once.
    pub(super) ideal_most_alive: usize,
    pub(super) most_alive: [usize; 2],
    pub(super) requests_idle: [Requests; 2],
    pub(super) requests_sequence: [Requests; 2],
    pub(super) requests_pools: [Requests; 2],
    pub(super) ended: EndState,
    pub(super) removed: EndState,
    pub(super) usage: [Usage; 2],
    pub(super) keda_version: String,
    pub(super) build: String,
    pub(super) wall: Duration,
}

fn ms(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.0} ms"))
}

fn p50_p95(latencies: &[f64], jobs: usize) -> String {
    let got = if latencies.len() < jobs {
        format!(" ({} of {jobs} got a Job)", latencies.len())
    } else {
        String::new()
    };
    format!(
        "{} / {}{got}",
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.95))
    )
}

fn requests(r: Requests) -> String {
    format!("{:.1} ({:.1} job listings)", r.all, r.listings)
}

/// One table row: figure, ideal, ours, KEDA.
fn row(figure: String, ideal: String, [ours, keda]: [String; 2]) -> [String; 4] {
    [figure, ideal, ours, keda]
}

/// A figure of both systems (0: ours, 1: KEDA).
fn each(g: &dyn Fn(usize) -> String) -> [String; 2] {
    [g(0), g(1)]
}

/// The table's rows: figure, ideal, ours, KEDA.
fn rows(f: &Figures, s: &Settings) -> Vec<[String; 4]> {
    let mut rows = scaling_rows(f, s);
    rows.extend(latency_rows(f, s));
    rows.extend(cleanup_rows(f, s));
    rows.extend(usage_rows(f));
    rows
}

/// Jobs created against jobs waiting: over- and under-scaling.
fn scaling_rows(f: &Figures, s: &Settings) -> Vec<[String; 4]> {
    let all_jobs = f.burst.jobs + f.trickle.jobs + f.cancel.jobs + f.after_cancel.jobs;
    vec![
        row(
            format!("Runner Jobs created over the sequence ({all_jobs} jobs)"),
            f.ideal_total.to_string(),
            each(&|i| f.created_total[i].to_string()),
        ),
        row(
            "Most runner Jobs alive (not finished, not deleted) at once".into(),
            f.ideal_most_alive.to_string(),
            each(&|i| f.most_alive[i].to_string()),
        ),
        row(
            format!("Jobs for a burst of {} jobs", f.burst.jobs),
            f.burst.jobs.to_string(),
            each(&|i| f.burst.created[i].to_string()),
        ),
        row(
            format!(
                "Jobs for a trickle of {} jobs, one every {} s",
                f.trickle.jobs,
                s.trickle_every.as_secs()
            ),
            f.trickle.jobs.to_string(),
            each(&|i| f.trickle.created[i].to_string()),
        ),
        row(
            format!(
                "New Jobs in the {} s after {} burst jobs went running",
                f.running.watched.as_secs(),
                f.running.jobs
            ),
            "0".into(),
            each(&|i| f.running.new_jobs[i].to_string()),
        ),
        row(
            format!(
                "Jobs of those {} running jobs still alive then",
                f.running.jobs
            ),
            f.running.jobs.to_string(),
            each(&|i| f.running.kept[i].to_string()),
        ),
        row(
            format!(
                "Jobs for {} jobs added after {} were cancelled",
                f.after_cancel.jobs, f.cancelled.jobs
            ),
            f.after_cancel.jobs.to_string(),
            each(&|i| f.after_cancel.created[i].to_string()),
        ),
    ]
}

/// From a job waiting (or first listed) to its Job.
fn latency_rows(f: &Figures, s: &Settings) -> Vec<[String; 4]> {
    let poll = s.poll.as_secs();
    let steps = [&f.burst, &f.trickle, &f.cancel, &f.after_cancel];
    let all = |pick: fn(&StepFigures) -> &[Vec<f64>; 2], i: usize| -> Vec<f64> {
        steps
            .iter()
            .flat_map(|step| pick(step)[i].iter().copied())
            .collect()
    };
    let all_latencies = |i: usize| all(|step| &step.latencies, i);
    let all_reactions = |i: usize| all(|step| &step.reactions, i);
    let all_jobs = f.burst.jobs + f.trickle.jobs + f.cancel.jobs + f.after_cancel.jobs;
    vec![
        row(
            format!("Waiting → Job, burst of {}: p50 / p95", f.burst.jobs),
            format!("≤ {poll} s (one poll)"),
            each(&|i| p50_p95(&f.burst.latencies[i], f.burst.jobs)),
        ),
        row(
            "Waiting → Job, trickle: p50 / p95".into(),
            format!("≤ {poll} s"),
            each(&|i| p50_p95(&f.trickle.latencies[i], f.trickle.jobs)),
        ),
        row(
            format!("Waiting → Job, all {all_jobs} jobs: p50 / p95"),
            format!("≤ {poll} s"),
            each(&|i| p50_p95(&all_latencies(i), all_jobs)),
        ),
        row(
            format!(
                "Listing that first showed the job → its Job, burst of {}: p50 / p95",
                f.burst.jobs
            ),
            "–".into(),
            each(&|i| p50_p95(&f.burst.reactions[i], f.burst.jobs)),
        ),
        row(
            format!("Listing that first showed the job → its Job, all {all_jobs} jobs: p50 / p95"),
            "–".into(),
            each(&|i| p50_p95(&all_reactions(i), all_jobs)),
        ),
    ]
}

/// Cancelled jobs, Forgejo requests, and what is left at the end.
fn cleanup_rows(f: &Figures, s: &Settings) -> Vec<[String; 4]> {
    let poll = s.poll.as_secs();
    let cancelled = |i: usize| {
        let c = &f.cancelled;
        let when = c.deleted_after[i].map_or(String::new(), |(first, last)| {
            format!(", {first:.0}–{last:.0} s after the cancel")
        });
        format!("{} of {} deleted{when}", c.deleted[i], c.had[i])
    };
    let end = |e: &EndState, i: usize| format!("{} / {}", e.unfinished[i], e.finished[i]);
    vec![
        row(
            format!(
                "Jobs of {} jobs cancelled before any runner took them, {} s after the cancel",
                f.cancelled.jobs,
                f.cancelled.watched.as_secs()
            ),
            "deleted".into(),
            each(&cancelled),
        ),
        row(
            format!("Forgejo requests per {poll} s interval, 1 pool / 1 ScaledJob, idle"),
            "1 job listing".into(),
            each(&|i| requests(f.requests_idle[i])),
        ),
        row(
            format!("Forgejo requests per {poll} s interval, 1 pool / 1 ScaledJob, over the sequence"),
            "–".into(),
            each(&|i| requests(f.requests_sequence[i])),
        ),
        row(
            format!(
                "Forgejo requests per {poll} s interval, {n} pools / {n} ScaledJobs on one org",
                n = s.pools
            ),
            "1 job listing".into(),
            each(&|i| requests(f.requests_pools[i])),
        ),
        row(
            format!(
                "Runner Jobs left {} s after every job ended ({} succeeded, the {} others \
                 cancelled without a runner): unfinished / finished",
                s.end_wait.as_secs(),
                f.running.jobs,
                f.ideal_total.saturating_sub(f.running.jobs + f.cancelled.jobs)
            ),
            "0 / –".into(),
            each(&|i| end(&f.ended, i)),
        ),
        row(
            "Runner registrations in Forgejo then".into(),
            "0".into(),
            [
                f.ended.registrations[0].to_string(),
                format!(
                    "{} (the persistent runner, registered by hand)",
                    f.ended.registrations[1]
                ),
            ],
        ),
        row(
            "After deleting the pools / ScaledJobs: runner Jobs left (unfinished / finished), registrations".into(),
            "0 / 0, 0".into(),
            each(&|i| {
                format!(
                    "{}, {}",
                    end(&f.removed, i),
                    f.removed.registrations[i]
                )
            }),
        ),
    ]
}

/// The controllers' own memory and CPU.
fn usage_rows(f: &Figures) -> Vec<[String; 4]> {
    let usage = |i: usize| {
        let u = &f.usage[i];
        format!(
            "{:.1} MiB / {:.1} MiB",
            u.rss_mean_mib(),
            u.hwm_kib as f64 / 1024.0
        )
    };
    let cpu = |i: usize| {
        let u = &f.usage[i];
        format!(
            "{:.1} s in {:.0} s = {:.2} %",
            u.cpu_seconds(),
            u.seconds,
            u.cpu_percent()
        )
    };
    vec![
        row(
            "Controller RSS over the run: mean / peak (VmHWM)".into(),
            "–".into(),
            each(&usage),
        ),
        row("Controller CPU over the run".into(), "–".into(), each(&cpu)),
    ]
}

/// The table as Markdown.
fn table(f: &Figures, s: &Settings) -> String {
    let mut out = String::from("| Figure | Ideal | Ours | KEDA |\n|---|---|---|---|\n");
    for [figure, ideal, ours, keda] in rows(f, s) {
        let _ = writeln!(out, "| {figure} | {ideal} | {ours} | {keda} |");
    }
    out
}

fn git(root: &Path, args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

/// The generated part of the section: when, what, how, and the table.
fn block(root: &Path, f: &Figures, s: &Settings) -> String {
    let date = Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string();
    let commit = git(root, &["rev-parse", "--short", "HEAD"]);
    let dirty = if git(root, &["status", "--porcelain"]).is_empty() {
        ""
    } else {
        " plus uncommitted changes"
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run of {date}: `cargo xtask bench{} --vs-keda`, commit {commit}{dirty}; our operator \
         ({} build) and KEDA {} out of the cluster; {}, shared by the control plane, the node, \
         the stand-in, both controllers and the bench. Wall time of the comparison: {:.0} s.\n",
        if f.build == "release" {
            " --release"
        } else {
            ""
        },
        f.build,
        f.keda_version,
        machine(),
        f.wall.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Settings: poll every {poll} s (our `pollInterval: {poll}s`, KEDA `pollingInterval: {poll}`), \
         `maxRunners` = `maxReplicaCount` = {max}, labels `{labels}`, KEDA's default scaling \
         strategy, our default `--not-waiting-grace` (60 s), our pools without a shared cache \
         (`spec.cache.mode: Disabled`: KEDA runs none). Sequence: a burst of {burst}, a \
         trickle of {trickle} (one every {every} s), {running} of the burst's jobs go running, \
         {cancel} jobs added then cancelled once both made their Jobs, {after} jobs added \
         {poll} s later; then {pools} pools / ScaledJobs (labels of their own, no jobs), then \
         every job ends (the running ones succeed, the rest are cancelled), then the pools and \
         ScaledJobs are deleted.\n",
        poll = s.poll.as_secs(),
        max = s.max_runners,
        labels = s.labels,
        burst = s.burst,
        trickle = s.trickle,
        every = s.trickle_every.as_secs(),
        running = s.running,
        cancel = s.cancelled,
        after = s.after_cancel,
        pools = s.pools,
    );
    let _ = writeln!(
        out,
        "How: one stand-in (Forgejo 15), an organization, a token and a namespace per system, \
         so neither takes the other's jobs and the stand-in's request log splits by token; \
         each job is added to both organizations at the same instant. Runner pods use \
         `schedulerName: {scheduler}`, which nothing serves, so they stay Pending, except the \
         {running} that run: the bench binds them and reports them Running (later Succeeded) \
         as a kubelet would, and their runner takes the job in the stand-in (ours: the \
         ephemeral runner our operator registered for that Job; KEDA: the one persistent \
         runner its design has registered beforehand, here by the bench). A watch in the \
         bench sees each Job; ours carry the Forgejo job id (`forgejo.runners.dev/job-id`), \
         KEDA's are not tied to a job, so the n-th KEDA Job first seen after a step began is \
         matched to the step's n-th job. \"Listing that first showed the job\" is when the \
         system's first job listing after the job was added reached the stand-in (its log is \
         checked every 2 ms). RSS and CPU are read from `/proc/<pid>` every second over the \
         whole run. The waiting → Job times of a burst depend on where in the poll interval \
         the burst falls (one draw per run); the listing → Job times do not.\n",
        scheduler = super::systems::STAND_IN_SCHEDULER,
        running = s.running,
    );
    out.push_str(&table(f, s));
    out
}

/// Prints the table and writes the section into docs/benchmarks.md.
pub(super) fn report(root: &Path, f: &Figures, s: &Settings) -> anyhow::Result<()> {
    let block = block(root, f, s);
    println!("\n{block}");
    let path = root.join("docs").join("benchmarks.md");
    let doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let updated = replace_block(&doc, &block);
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    println!("==> vs-keda: written into {}", path.display());
    Ok(())
}

/// `doc` with the text between the markers replaced by `block`; without markers, a new
/// section at the end.
fn replace_block(doc: &str, block: &str) -> String {
    if let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END))
        && begin < end
    {
        let mut out = String::with_capacity(doc.len() + block.len());
        out.push_str(&doc[..begin + BEGIN.len()]);
        out.push('\n');
        out.push_str(block);
        out.push_str(&doc[end..]);
        return out;
    }
    let mut out = doc.trim_end().to_owned();
    let _ = write!(out, "\n\n{SECTION}\n\n{BEGIN}\n{block}{END}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_appended_once_then_replaced() {
        let doc = "# Benchmarks\n\ntext\n";
        let first = replace_block(doc, "| a |\n");
        assert!(first.contains(SECTION));
        assert!(first.ends_with(&format!("{BEGIN}\n| a |\n{END}\n")));
        let notes = format!("{first}\nWhy KEDA wins a row.\n");
        let second = replace_block(&notes, "| b |\n");
        assert!(second.contains("| b |") && !second.contains("| a |"));
        assert!(second.ends_with("Why KEDA wins a row.\n"));
        assert_eq!(second.matches(SECTION).count(), 1);
    }

    #[test]
    fn every_row_has_both_systems() {
        let figures = Figures::default();
        for row in rows(&figures, &Settings::default()) {
            assert!(row.iter().all(|cell| !cell.contains('|')), "{row:?}");
        }
    }
}
