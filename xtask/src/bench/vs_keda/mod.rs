//! `cargo xtask bench --vs-keda` (issue 16): our operator and KEDA's `forgejo-runner` scaler
//! side by side, in one run, against the same apiserver and the same Forgejo stand-in.
//!
//! Each system serves its own organization of the one stand-in (`ours`, `keda`) with its
//! own token, so their runner pods never compete for a job and the stand-in's request log
//! splits by token; each has its own namespace (`vs-ours`, `vs-keda`). Every job of the
//! sequence is added to both organizations at the same instant. The configurations are
//! equivalent: the same labels, poll interval and maximum (see [`Settings`]).
//!
//! Runner pods use a scheduler that does not exist, so they stay Pending: the controllers
//! are measured, not a node. Only the running step needs pods that run: the bench plays
//! the kubelet for those (binds them and reports them Running, later Succeeded) and has the
//! pod's runner take the job in the stand-in (ours: the ephemeral registration our
//! operator made for that Job; KEDA: the one persistent runner its design registers
//! beforehand, which the bench registers).
//!
//! Jobs are seen by a watch. Ours carry the Forgejo job id (`forgejo.runners.dev/job-id`);
//! KEDA's are not tied to a job, so the n-th KEDA Job first seen after a step started is
//! matched to the step's n-th job.

mod kubelet;
mod report;
mod steps;
mod systems;
mod usage;
mod watch;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use forgejo::Scope;
use forgejo_stand_in::{StandIn, StandInConfig};
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::api::{Api, ListParams};

use self::report::{CancelFigures, EndState, Figures, RunningFigures};
use self::steps::{Pair, Step};
use self::systems::System;
use self::usage::{ListingClock, Requests, Sampler};
use self::watch::{JobWatch, SeenJob};
use super::setup::{OperatorBinary, start_operator};
use crate::cluster::Keda;

/// The equivalent configuration of both systems, and the sequence's sizes.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// Our `pollInterval`, KEDA's `pollingInterval`.
    pub(super) poll: Duration,
    /// Our `maxRunners`, KEDA's `maxReplicaCount` (above the most jobs at once, so neither caps).
    pub(super) max_runners: usize,
    /// The runner labels of the main pool and ScaledJob (the jobs' `runs-on`).
    pub(super) labels: &'static str,
    /// Jobs added at once.
    pub(super) burst: usize,
    /// Jobs added one at a time…
    pub(super) trickle: usize,
    /// …this far apart.
    pub(super) trickle_every: Duration,
    /// Burst jobs that go running.
    pub(super) running: usize,
    /// Jobs cancelled before any runner took them.
    pub(super) cancelled: usize,
    /// Jobs added after the cancel.
    pub(super) after_cancel: usize,
    /// Pools (ScaledJobs) on one organization for the request count.
    pub(super) pools: usize,
    /// How long each request count runs.
    pub(super) window: Duration,
    /// How long after the cancel the bench looks at the cancelled jobs' Jobs.
    pub(super) cancel_watch: Duration,
    /// How long after every job ended the bench counts what is left.
    pub(super) end_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(5),
            max_runners: 50,
            labels: "linux",
            burst: 20,
            trickle: 10,
            trickle_every: Duration::from_secs(2),
            running: 5,
            cancelled: 5,
            after_cancel: 5,
            pools: 10,
            window: Duration::from_secs(30),
            // Our operator deletes a Job whose job no longer waits `--not-waiting-grace`
            // (60 s) after its creation; 90 s after the cancel covers that and a poll.
            cancel_watch: Duration::from_secs(90),
            end_wait: Duration::from_secs(20),
        }
    }
}

/// The most jobs waiting or running at once: what one Job per job would keep alive.
#[derive(Default)]
struct Ideal {
    live: usize,
    most: usize,
    total: usize,
}

impl Ideal {
    fn add(&mut self, n: usize) {
        self.live += n;
        self.total += n;
        self.most = self.most.max(self.live);
    }

    fn end(&mut self, n: usize) {
        self.live = self.live.saturating_sub(n);
    }
}

/// A runner Job whose pod runs its job (the running step).
struct Running {
    system: System,
    job: String,
    pod: String,
}

/// What the run shares.
struct Run<'a> {
    /// When the comparison began (for the progress lines).
    began: Instant,
    client: &'a Client,
    forgejo: StandIn,
    watch: JobWatch,
    clock: ListingClock,
    settings: Settings,
    ideal: Ideal,
}

impl Run<'_> {
    /// A progress line, with the seconds since the comparison began.
    fn say(&self, what: &str) {
        println!(
            "==> vs-keda [{:>3.0} s]: {what}",
            self.began.elapsed().as_secs_f64()
        );
    }
}

/// Runs the comparison, prints the table and writes it into docs/benchmarks.md.
pub(super) async fn bench_vs_keda(
    root: &Path,
    client: &Client,
    operator: &OperatorBinary,
    keda: &Keda,
    admin_kubeconfig: &Path,
) -> anyhow::Result<()> {
    let began = Instant::now();
    systems::namespaces(client).await?;
    systems::install_keda_crds(client, keda).await?;
    systems::apply_trigger_auth(client).await?;
    let forgejo = StandIn::start(StandInConfig {
        tokens: System::BOTH.map(|s| s.token().to_owned()).to_vec(),
        ..StandInConfig::default()
    });
    // KEDA's design: its pods run `forgejo-runner one-job` with a runner registered once,
    // beforehand, by hand; the bench registers it.
    let keda_org = Scope::Organization(System::Keda.org().into());
    let persistent = forgejo.add_runner(&keda_org, "keda-runner", false);
    let mut run = Run {
        began,
        client,
        forgejo,
        watch: JobWatch::default(),
        clock: ListingClock::default(),
        settings: Settings::default(),
        ideal: Ideal::default(),
    };
    let url = run.forgejo.url();
    systems::apply_pair(client, &url, "vs-0", run.settings.labels, &run.settings).await?;
    let mut watches = run.watch.start(client);
    watches.push(run.clock.start(&run.forgejo));
    run.say("both controllers start");
    let ours = start_operator(operator, System::Ours.namespace())?;
    let theirs = systems::start_keda(root, keda, admin_kubeconfig)?;
    let sampler = Sampler::default();
    let sampling = sampler.start([ours.pid(), theirs.pid()]);
    let result = sequence(&mut run, persistent.id, &sampler).await;
    sampling.abort();
    for task in watches {
        task.abort();
    }
    drop((ours, theirs));
    let mut figures = result?;
    figures.keda_version = keda.version.clone();
    figures.build = operator.build.to_owned();
    figures.wall = began.elapsed();
    report::report(root, &figures, &run.settings)
}

/// The whole sequence, then the cleanup; returns the figures.
async fn sequence(
    run: &mut Run<'_>,
    persistent: i64,
    sampler: &Sampler,
) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    let poll = run.settings.poll;
    wait_for_first_listings(&run.forgejo, Duration::from_secs(120)).await?;
    tokio::time::sleep(poll).await;

    run.say(&format!("idle, {} s", run.settings.window.as_secs()));
    figures.requests_idle = count_requests(run, run.settings.window).await;
    let before_sequence = (Requests::now(&run.forgejo), Instant::now());

    run.say(&format!("a burst of {}", run.settings.burst));
    let mut burst = add_step(run, "burst", run.settings.burst, Duration::ZERO).await;
    burst.settle(&run.watch, &run.settings, poll * 4).await;

    run.say(&format!("a trickle of {}", run.settings.trickle));
    burst.end = Some(Instant::now());
    let every = run.settings.trickle_every;
    let mut trickle = add_step(run, "trickle", run.settings.trickle, every).await;
    trickle.settle(&run.watch, &run.settings, poll * 4).await;
    trickle.end = Some(Instant::now());

    run.say(&format!("{} jobs go running", run.settings.running));
    let (running, running_pairs) = start_running(run, &burst, persistent).await?;
    figures.running = watch_running(run, &running_pairs, &running).await;

    run.say(&format!("{} jobs, cancelled", run.settings.cancelled));
    let mut cancel = add_step(run, "cancel", run.settings.cancelled, Duration::ZERO).await;
    cancel.settle(&run.watch, &run.settings, poll * 4).await;
    cancel.end = Some(Instant::now());
    let cancelled_at = Instant::now();
    for pair in &cancel.pairs {
        for id in pair.ids {
            run.forgejo.cancel_job(id);
        }
    }
    run.ideal.end(cancel.pairs.len());
    tokio::time::sleep(poll + Duration::from_secs(1)).await;

    run.say(&format!(
        "{} jobs after the cancel",
        run.settings.after_cancel
    ));
    let mut after = add_step(run, "after", run.settings.after_cancel, Duration::ZERO).await;
    after.settle(&run.watch, &run.settings, poll * 4).await;
    let look = cancelled_at + run.settings.cancel_watch;
    tokio::time::sleep(look.saturating_duration_since(Instant::now())).await;
    after.end = Some(Instant::now());
    figures.cancelled = cancelled(run, &cancel, cancelled_at);
    let window = before_sequence.1.elapsed();
    figures.requests_sequence =
        Requests::per_interval(before_sequence.0, Requests::now(&run.forgejo), window, poll);

    run.say(&format!("{} pools / ScaledJobs", run.settings.pools));
    let url = run.forgejo.url();
    for i in 1..run.settings.pools {
        let (name, labels) = (format!("vs-{i}"), format!("extra-{i}"));
        systems::apply_pair(run.client, &url, &name, &labels, &run.settings).await?;
    }
    tokio::time::sleep(poll * 2).await;
    figures.requests_pools = count_requests(run, run.settings.window).await;

    figures.burst = burst.figures(&run.watch, &run.clock);
    figures.trickle = trickle.figures(&run.watch, &run.clock);
    figures.cancel = cancel.figures(&run.watch, &run.clock);
    figures.after_cancel = after.figures(&run.watch, &run.clock);
    figures.ideal_total = run.ideal.total;
    figures.ideal_most_alive = run.ideal.most;
    for system in System::BOTH {
        figures.created_total[system.index()] = run.watch.of(system).len();
        figures.most_alive[system.index()] = run.watch.most_alive(system);
    }

    run.say("every job ends");
    for pair in &running_pairs {
        for id in pair.ids {
            run.forgejo.finish_job(id, "success");
        }
    }
    for r in &running {
        kubelet::set_succeeded(run.client, r.system.namespace(), &r.pod).await?;
    }
    for job in run.forgejo.jobs() {
        if job.status == "waiting" {
            run.forgejo.cancel_job(job.id);
        }
    }
    tokio::time::sleep(run.settings.end_wait).await;
    let owners = System::BOTH.map(|system| {
        let id = burst.pairs.first().map(|p| p.ids[system.index()]);
        id.and_then(|id| run.forgejo.job(id))
            .map(|job| job.owner_id)
    });
    figures.ended = end_state(run, owners).await?;

    run.say("the pools and ScaledJobs are deleted");
    systems::delete_all(run.client, Duration::from_secs(90)).await?;
    tokio::time::sleep(poll * 2).await;
    figures.removed = end_state(run, owners).await?;
    figures.usage = sampler.usage();
    Ok(figures)
}

/// Waits until each system has listed its organization's jobs once.
async fn wait_for_first_listings(forgejo: &StandIn, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let counts = Requests::now(forgejo);
        if counts.iter().all(|c| c.listings > 0.0) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "no job listing after {timeout:?} (ours: {}, KEDA: {}); see the logs above",
            counts[0].listings,
            counts[1].listings
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests per poll interval over `window`.
async fn count_requests(run: &Run<'_>, window: Duration) -> [Requests; 2] {
    let before = Requests::now(&run.forgejo);
    tokio::time::sleep(window).await;
    let after = Requests::now(&run.forgejo);
    Requests::per_interval(before, after, window, run.settings.poll)
}

/// Adds `n` jobs named `{name}-{i}` to both organizations, `every` apart.
async fn add_step(run: &mut Run<'_>, name: &str, n: usize, every: Duration) -> Step {
    let mut step = Step::new();
    for i in 0..n {
        if i > 0 && !every.is_zero() {
            tokio::time::sleep(every).await;
        }
        step.add(&run.forgejo, run.settings.labels, &format!("{name}-{i}"));
        run.ideal.add(1);
    }
    step
}

/// The first `running` jobs of the burst go running in a pod of each system: the pod is
/// reported Running and its runner takes the job. Returns those Jobs and the jobs.
async fn start_running(
    run: &Run<'_>,
    burst: &Step,
    persistent: i64,
) -> anyhow::Result<(Vec<Running>, Vec<Pair>)> {
    let chosen: Vec<Pair> = burst
        .pairs
        .iter()
        .take(run.settings.running)
        .cloned()
        .collect();
    let ours: Vec<SeenJob> = burst.jobs_of(&run.watch, System::Ours);
    let keda: Vec<SeenJob> = burst
        .jobs_of(&run.watch, System::Keda)
        .into_iter()
        .filter(SeenJob::alive)
        .collect();
    let mut running = Vec::new();
    for (n, pair) in chosen.iter().enumerate() {
        let id = pair.ids[System::Ours.index()];
        let job = ours
            .iter()
            .find(|j| j.job_id == Some(id) && j.alive())
            .with_context(|| format!("our operator has no live Job for job {id}"))?;
        // Ours registers one ephemeral runner per Job, named after it.
        let runner = run
            .forgejo
            .runners()
            .into_iter()
            .find(|r| r.name == job.name)
            .with_context(|| format!("no runner registration named {}", job.name))?;
        running.push(run_pod(run, System::Ours, &job.name).await?);
        run.forgejo.take_job(id, runner.id);

        let job = keda
            .get(n)
            .with_context(|| format!("KEDA has no live Job number {n} for the burst"))?;
        running.push(run_pod(run, System::Keda, &job.name).await?);
        run.forgejo
            .take_job(pair.ids[System::Keda.index()], persistent);
    }
    Ok((running, chosen))
}

/// Reports the pod of `system`'s Job `job` Running.
async fn run_pod(run: &Run<'_>, system: System, job: &str) -> anyhow::Result<Running> {
    let ns = system.namespace();
    let pod = kubelet::pod_of(run.client, ns, job, Duration::from_secs(30)).await?;
    kubelet::set_running(run.client, ns, &pod).await?;
    Ok(Running {
        system,
        job: job.to_owned(),
        pod,
    })
}

/// Watches three poll intervals after jobs went running: new Jobs, and whether the Jobs
/// running them stay.
async fn watch_running(run: &Run<'_>, pairs: &[Pair], running: &[Running]) -> RunningFigures {
    let from = Instant::now();
    let watched = run.settings.poll * 3;
    tokio::time::sleep(watched).await;
    let to = Instant::now();
    let mut figures = RunningFigures {
        jobs: pairs.len(),
        watched,
        ..RunningFigures::default()
    };
    for system in System::BOTH {
        let i = system.index();
        let jobs = run.watch.of(system);
        figures.new_jobs[i] = run.watch.seen_between(system, from, to).len();
        figures.kept[i] = running
            .iter()
            .filter(|r| r.system == system)
            .filter(|r| jobs.iter().any(|j| j.name == r.job && j.alive()))
            .count();
    }
    figures
}

/// What became of the Jobs of the cancelled jobs.
fn cancelled(run: &Run<'_>, cancel: &Step, at: Instant) -> CancelFigures {
    let mut figures = CancelFigures {
        jobs: cancel.pairs.len(),
        watched: run.settings.cancel_watch,
        ..CancelFigures::default()
    };
    for system in System::BOTH {
        let i = system.index();
        let jobs = cancel.jobs_of(&run.watch, system);
        figures.had[i] = jobs.len();
        let after: Vec<f64> = jobs
            .iter()
            .filter_map(|j| j.deleted)
            .map(|d| d.saturating_duration_since(at).as_secs_f64())
            .collect();
        figures.deleted[i] = after.len();
        let first = after.iter().copied().reduce(f64::min);
        let last = after.iter().copied().reduce(f64::max);
        figures.deleted_after[i] = first.zip(last);
    }
    figures
}

/// Runner Jobs in each namespace, and registrations of each organization (by owner id),
/// now.
async fn end_state(run: &Run<'_>, owners: [Option<i64>; 2]) -> anyhow::Result<EndState> {
    let mut state = EndState::default();
    let runners = run.forgejo.runners();
    for system in System::BOTH {
        let i = system.index();
        let jobs: Api<Job> = Api::namespaced(run.client.clone(), system.namespace());
        let listed = jobs
            .list(&ListParams::default().labels(&system.jobs_selector()))
            .await?;
        for job in &listed.items {
            if watch::job_finished(job) {
                state.finished[i] += 1;
            } else {
                state.unfinished[i] += 1;
            }
        }
        state.registrations[i] = runners
            .iter()
            .filter(|r| owners[i].is_some() && r.owner_id == owners[i])
            .count();
    }
    Ok(state)
}
