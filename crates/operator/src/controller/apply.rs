//! The apply path of a pool, in its phases: [`observe`] what Forgejo and the cluster hold,
//! [`decide`] with `scheduler::plan`, act through the [`PlanExecutor`], then write the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use api::{RunnerDeployment, RunnerDeploymentStatus};
use scheduler::{
    ListingInput, OwnedJob, Plan, PlanInput, RegistrationListing, RunnerPath, RunnerRegistration,
    WarmInput, WarmRunner,
};

use super::events::publish;
use super::executor::{CarryOutProblems, PlanExecutor};
use super::observe::{self, forgejo_scope, owned_jobs, read_token};
use super::start_pause::Pause;
use super::status::apply_status;
use super::status::{reasons, record_failure, record_not_ready, record_success};
use super::{Context, cache, latency, lifecycle, warm};
use crate::error::{Error, Result};
use crate::metrics::{PoolLabels, ReconcileMetrics};
use crate::polls::{Poll, PollRequest};

/// The apply path: observe, decide, act, write the status.
pub async fn apply(rd: Arc<RunnerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let now = Time(Timestamp::now());
    let generation = rd.metadata.generation;
    let mut status = rd.status.clone().unwrap_or_default();
    if let Ok(scope) = rd.spec.scope() {
        status.scope = Some(scope.to_string());
    }
    let outcome = observe_and_act(&rd, &ctx, &mut status, &now).await;
    if !ctx.may_write() {
        // Leadership was lost mid-way: write nothing more.
        return Ok(Action::await_change());
    }
    match outcome {
        Ok(action) => {
            apply_status(&ctx, &rd, &status).await?;
            Ok(action)
        }
        Err(error) => {
            record_failure(&mut status, &error, generation, &now);
            let (reason, note) = (error.reason(), error.to_string());
            publish(&ctx, &rd, EventType::Warning, reason, "Reconcile", &note).await;
            if let Err(status_error) = apply_status(&ctx, &rd, &status).await {
                tracing::warn!(%status_error, "could not write the failure status");
            }
            Err(error)
        }
    }
}

async fn observe_and_act(
    rd: &RunnerDeployment,
    ctx: &Context,
    status: &mut RunnerDeploymentStatus,
    now: &Time,
) -> Result<Action> {
    let observed = observe(rd, ctx).await?;
    status.forgejo_version = Some(observed.version.raw.clone());
    if !ctx.may_write() {
        return Ok(Action::await_change());
    }
    let pool = scheduler::Pool::from_resource(rd)?;
    let cache = cache::reconcile_cache(ctx, rd, &pool).await;
    let decision = decide(rd, ctx, &observed, cache.runner_cache.as_ref(), now).await?;
    let labels = PoolLabels {
        namespace: rd.namespace().unwrap_or_default(),
        pool: rd.name_any(),
    };
    let metrics = &ctx.metrics.reconcile;
    if observed.polled.is_ok() {
        let waiting = i64::try_from(decision.plan.summary.waiting).unwrap_or(i64::MAX);
        metrics.waiting_jobs.get_or_create(&labels).set(waiting);
        latency::note_first_seen(ctx, rd, &decision.plan.waiting_jobs);
    }
    if !ctx.may_write() {
        return Ok(Action::await_change());
    }

    let executor = PlanExecutor::new(ctx, rd, &observed.client, &observed.scope);
    let problems = executor.carry_out(&decision.plan).await;
    let plan = &decision.plan;
    if scheduler::changes_registrations(plan) {
        // The next poll lists them, to see the change took.
        let uid = rd.uid().unwrap_or_default();
        ctx.sweeps.changed(&uid, Instant::now());
    }
    let active = i64::try_from(plan.summary.active + cold_creations(plan)).unwrap_or(i64::MAX);
    metrics.active_jobs.get_or_create(&labels).set(active);
    warm::report(ctx, rd, plan, &labels).await;
    let seen = lifecycle::Observation {
        rd,
        client: &observed.client,
        listing: observed.polled.as_ref().ok().map(|p| &*p.poll.jobs),
        owned: &observed.owned,
    };
    ctx.jobs_seen.observe(seen, &ctx.metrics.jobs).await;

    *status = RunnerDeploymentStatus {
        scope: status.scope.take(),
        forgejo_version: status.forgejo_version.take(),
        ..plan.status.clone()
    };
    if observed.polled.is_ok() {
        status.oldest_waiting_since = ctx
            .jobs_seen
            .oldest_waiting_since(&rd.uid().unwrap_or_default());
    }
    cache::record(ctx, rd, &cache, status, now).await;
    super::hook::reconcile_hook(ctx, rd, &observed.client, &observed.scope, status, now).await;
    if let Err(error) = &observed.polled {
        return Err(Error::Forgejo(error.clone()));
    }
    write_conditions(rd, &observed, &decision, &problems, status, now);
    // The next poll is due when the listing this plan read is `max_age` old, not an
    // interval from now: a reconcile woken by a Job or pod event reads the shared listing,
    // and requeueing a whole interval after it put the next poll off by up to an interval.
    let poll_due = observed
        .polled
        .as_ref()
        .map_or(observed.interval, |polled| {
            observed
                .max_age
                .saturating_sub(polled.poll.jobs.at.elapsed())
        });
    let next = plan
        .recheck_after
        .map_or(poll_due, |recheck| recheck.min(poll_due))
        .min(super::hook::recheck_after(rd))
        .max(Duration::from_millis(200));
    Ok(Action::requeue(next))
}

/// What a reconcile found: the pool's spec parsed, its Forgejo, the poll, what it owns.
struct Observed {
    scope: forgejo::Scope,
    interval: Duration,
    /// How old a shared listing may be for this pool (its interval, shorter with warm
    /// runners).
    max_age: Duration,
    client: forgejo::Client,
    version: forgejo::ServerVersion,
    runner_path: RunnerPath,
    polled: Result<Polled, Arc<forgejo::Error>>,
    owned: Vec<OwnedJob>,
    warm: Vec<WarmRunner>,
}

/// The pool's share of one poll.
struct Polled {
    /// The shared poll: the whole listing of the scope (the scheduler keeps what the pool's
    /// labels run: the label rule, applied once), and the registrations if it listed them.
    poll: Poll,
    /// Its registrations without those this replica deleted since, when there are such.
    registrations: Option<Vec<RunnerRegistration>>,
}

impl Polled {
    fn registrations(&self) -> &[RunnerRegistration] {
        match (&self.registrations, &self.poll.registrations) {
            (Some(filtered), _) => filtered,
            (None, Some(listed)) => &listed.runners,
            (None, None) => &[],
        }
    }
}

/// Observes a pool: checks its spec, reads its token, asks Forgejo (through the shared
/// poll) and reads what it owns from the watch caches.
async fn observe(rd: &RunnerDeployment, ctx: &Context) -> Result<Observed> {
    rd.spec.validate()?;
    rd.spec
        .check_pod_privileges(if ctx.allow_privileged_runners {
            api::PodPrivileges::Privileged
        } else {
            api::PodPrivileges::Baseline
        })?;
    let scope = forgejo_scope(&rd.spec.scope()?);
    let interval = rd.spec.poll_interval()?;
    let label_names: Vec<String> = rd
        .spec
        .runner_labels()
        .map_err(api::SpecError::from)?
        .into_iter()
        .map(|label| label.name)
        .collect();

    let token = read_token(ctx, rd).await?;
    let client = ctx.polls.client(&rd.spec.forgejo_server, &token)?;
    let version = match ctx.polls.version(&client).await {
        Ok(version) => version,
        Err(error) => {
            ctx.polls.forget_version(client.server());
            return Err(error.into());
        }
    };
    if !version.supports_job_listing() {
        return Err(Error::ForgejoTooOld {
            version: version.raw.clone(),
        });
    }
    let runner_path = if version.supports_ephemeral_runners() {
        RunnerPath::Ephemeral
    } else {
        RunnerPath::Legacy
    };

    let runners = owned_jobs(ctx, rd);
    let (mut owned, warm) = (runners.owned, runners.warm);
    let namespace = rd.namespace().unwrap_or_default();
    observe::note_refused_pods(ctx, &namespace, &mut owned).await;
    // A pool with warm runners plans again when a waiting job's grace ends: it must see
    // then whether a warm runner took the job, not a listing from before.
    let max_age = match rd.spec.warm_runners.as_ref().map(|w| w.fetch_interval()) {
        Some(Ok(fetch)) => interval.min(scheduler::warm_grace(fetch) / 2),
        _ => interval,
    };
    // A webhook delivery stamped the pool since its last poll: a job waits now, so no
    // listing from before the stamp answers (the receiver stamps at most once a second).
    let woken = ctx.wakes.take_new(rd);

    let polled = poll(
        ctx,
        rd,
        PollRequest {
            pool: &ObjectRef::from_obj(rd),
            client: &client,
            token: &token,
            version: &version,
            scope: &scope,
            label_names: &label_names,
            max_age: if woken { Duration::ZERO } else { max_age },
            registrations: registrations_max_age(ctx, rd, &owned, &warm, interval),
        },
    )
    .await;
    Ok(Observed {
        scope,
        interval,
        max_age,
        client,
        version,
        runner_path,
        polled,
        owned,
        warm,
    })
}

/// Whether this poll of the pool lists the scope's registrations too, and how old a
/// shared listing may be (the rule is `scheduler::registration_listing`).
fn registrations_max_age(
    ctx: &Context,
    rd: &RunnerDeployment,
    owned: &[OwnedJob],
    warm: &[WarmRunner],
    interval: Duration,
) -> Option<Duration> {
    let uid = rd.uid().unwrap_or_default();
    let namespace = rd.namespace().unwrap_or_default();
    let state = ctx.sweeps.state(&uid);
    let mut input = ListingInput {
        owned_jobs: owned,
        has_runner_secrets: false,
        registrations_changed: state.registrations_changed,
        polls_without_listing: state.polls_without_listing,
        warm_runners: warm,
    };
    // The Secrets cache holds every pool's: walked only when nothing else decides.
    let mut listing = scheduler::registration_listing(&input);
    if listing != RegistrationListing::Current {
        input.has_runner_secrets = observe::has_runner_secrets(ctx, &namespace, &uid);
        listing = scheduler::registration_listing(&input);
    }
    match listing {
        RegistrationListing::Skip => None,
        RegistrationListing::Current => Some(interval),
        RegistrationListing::Sweep => Some(interval * scheduler::REGISTRATION_SWEEP_POLLS),
    }
}

/// Polls Forgejo through the shared poll, counts the outcome, and notes what the pool's
/// listings were.
async fn poll(
    ctx: &Context,
    rd: &RunnerDeployment,
    request: PollRequest<'_>,
) -> Result<Polled, Arc<forgejo::Error>> {
    let server = request.client.server().to_owned();
    let poll_started = Instant::now();
    let polled = ctx.polls.poll(request).await;
    let metrics = &ctx.metrics.reconcile;
    metrics
        .poll_duration
        .observe(poll_started.elapsed().as_secs_f64());
    let poll = match polled {
        Ok(poll) => poll,
        Err(error) => {
            ReconcileMetrics::count(&metrics.polls, crate::error::forgejo_reason(&error));
            return Err(error);
        }
    };
    ReconcileMetrics::count(&metrics.polls, "Ok");
    let listed_at = poll.registrations.as_ref().map(|listed| listed.at);
    ctx.sweeps
        .polled(&rd.uid().unwrap_or_default(), poll.jobs.at, listed_at);
    // Registrations this replica deleted after the listing was made are gone already.
    let registrations = poll.registrations.as_ref().and_then(|listed| {
        let gone = |r: &RunnerRegistration| ctx.deleted.deleted_after(&server, r.id, listed.at);
        let all = &listed.runners;
        all.iter()
            .any(gone)
            .then(|| all.iter().filter(|r| !gone(r)).cloned().collect())
    });
    Ok(Polled {
        poll,
        registrations,
    })
}

/// What to do: the scheduler's plan, held back while the pool's pods cannot start.
struct Decision {
    plan: Plan,
    pause: Option<Pause>,
}

async fn decide(
    rd: &RunnerDeployment,
    ctx: &Context,
    observed: &Observed,
    cache: Option<&scheduler::RunnerCache>,
    now: &Time,
) -> Result<Decision> {
    let polled = observed.polled.as_ref().ok();
    let registrations_listed_at = polled
        .and_then(|p| p.poll.registrations.as_ref())
        .map(|listed| latency::wall_clock(listed.at));
    let waiting_since = latency::waiting_since(ctx, rd);
    let pool_uid = rd.uid().unwrap_or_default();
    let not_waiting_since = ctx.not_waiting.of_pool(&pool_uid);
    let input = PlanInput {
        pool: rd,
        forgejo_jobs: polled.map(|p| p.poll.jobs.jobs.as_slice()),
        owned_jobs: &observed.owned,
        registrations: polled.map_or(&[], Polled::registrations),
        runner_path: observed.runner_path,
        timeouts: ctx.timeouts,
        cache,
        warm: WarmInput {
            runners: &observed.warm,
            registrations_listed_at: registrations_listed_at.as_ref(),
            waiting_since: &waiting_since,
        },
        not_waiting_since: &not_waiting_since,
    };
    let mut plan = scheduler::plan(&input, now.clone())?;
    if polled.is_some() {
        ctx.not_waiting
            .remember(&pool_uid, &plan.not_waiting_jobs, now);
    }
    let started_runner = ctx
        .start_pause
        .paused_since(&pool_uid)
        .is_some_and(|since| {
            observed
                .owned
                .iter()
                .any(|job| job.runner_started_at.as_ref().is_some_and(|t| t.0 > since))
        });
    let pause = ctx.start_pause.observe(
        &pool_uid,
        rd.metadata.generation,
        &plan.delete_jobs,
        started_runner,
        ctx.timeouts.image_pull_deadline,
        Instant::now(),
    );
    if let Some(pause) = &pause {
        // Pods of this pool cannot start: no new Job (and registration) until the pause ends.
        tracing::info!(
            reason = pause.reason.as_str(),
            failures = pause.failures,
            "new runner Jobs paused"
        );
        plan.create_jobs.clear();
    }
    Ok(Decision { plan, pause })
}

/// How many of the plan's new Jobs are for a Forgejo job (the others are warm runners).
fn cold_creations(plan: &Plan) -> usize {
    plan.create_jobs.iter().filter(|c| !c.is_warm()).count()
}

/// The conditions of a reconcile whose poll worked: Ready, unless something holds it back.
fn write_conditions(
    rd: &RunnerDeployment,
    observed: &Observed,
    decision: &Decision,
    problems: &CarryOutProblems,
    status: &mut RunnerDeploymentStatus,
    now: &Time,
) {
    let generation = rd.metadata.generation;
    let plan = &decision.plan;
    let path = match observed.runner_path {
        RunnerPath::Ephemeral => "ephemeral runners pinned to each job's handle",
        RunnerPath::Legacy => {
            "legacy path (Forgejo < 15): pods register with the registration token and take any matching job; their registrations stay behind as offline runners"
        }
    };
    record_success(
        status,
        &format!("Forgejo {} answered; {path}", observed.version.raw),
        &format!(
            "{} waiting, {} active of maxRunners {}",
            plan.summary.waiting,
            plan.summary.active + cold_creations(plan),
            plan.summary.max_runners
        ),
        generation,
        now,
    );
    if let Some((count, first)) = &problems.without_credentials {
        let message = format!(
            "{count} runner pod(s) have no credentials and cannot take their job; the Job stays and credentials are retried next poll: {first}"
        );
        let reason = reasons::CREDENTIALS_FAILED;
        record_not_ready(status, reason, &message, generation, now);
    }
    if let Some(pause) = &decision.pause {
        let left = pause
            .until
            .saturating_duration_since(Instant::now())
            .as_secs();
        let message = format!(
            "runner pods of this pool cannot start ({} in a row): {}; no new runner Job for {left}s (it doubles each time); fix spec.runnerImage, the label's image or the registry credentials: a spec change retries at once",
            pause.failures, pause.message
        );
        record_not_ready(status, pause.reason.as_str(), &message, generation, now);
    }
    if let Some(message) = &problems.job_refused {
        let reason = reasons::JOB_CREATE_FAILED;
        record_not_ready(status, reason, message, generation, now);
    }
}
