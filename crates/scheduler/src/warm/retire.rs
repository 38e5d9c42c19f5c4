//! Which warm runners go, and how: one [`WarmRetirement`] each, its registration (when it
//! has one, not active) then its Job, carried out together by the operator after it read
//! the registration again; a busy one never.

use super::*;

/// The live warm runners to retire, and why: all that are not busy when warm runners are
/// not kept; else those of labels no longer asked for, those beyond the count, those whose
/// pod did not start in time, and idle ones old enough to be recycled. A label with a
/// waiting job keeps its runners (one is about to take it).
pub(super) fn retirements<'a>(
    warm_view: &WarmView<'a>,
    ctx: &WarmContext<'_>,
) -> Vec<(&'a WarmRunner, Reason)> {
    let mut out = Vec::new();
    let wanted: BTreeMap<&str, usize> = ctx
        .pool
        .warm
        .iter()
        .flat_map(|w| w.runners.iter())
        .map(|(label, count)| (label.name.as_str(), *count))
        .collect();
    let mut ready_seen: BTreeMap<&str, usize> = BTreeMap::new();
    // Oldest first: the newest are the surplus.
    let mut live: Vec<&(&WarmRunner, WarmState)> = warm_view.live.iter().collect();
    live.sort_by_key(|(r, _)| (r.created_at.clone(), r.serial));
    for (runner, state) in live {
        // Busy, unknown, or done (its task ended: the pod exits by itself).
        if !state.is_ready() {
            continue;
        }
        let label = runner.label.as_str();
        // On the legacy path which started runner runs a job is not known: while one of
        // the label runs, none of its started runners is retired.
        let legacy_unsure = ctx.path == RunnerPath::Legacy
            && runner.runner_started_at.is_some()
            && state::running_on(ctx.view, label) > 0;
        if legacy_unsure {
            continue;
        }
        let not_started = runner.runner_started_at.is_none()
            && runner
                .created_at
                .as_ref()
                .is_some_and(|at| ctx.now.0 >= after(at, ctx.start_deadline));
        if not_started {
            out.push((*runner, Reason::WarmRunnerNotStarted));
            continue;
        }
        if !warm_view.kept || !wanted.contains_key(label) {
            out.push((*runner, Reason::WarmRunnerRetired));
            continue;
        }
        if deferral::waiting_on(ctx.view, label) {
            continue;
        }
        let seen = ready_seen.entry(label).or_default();
        *seen += 1;
        if *seen > wanted.get(label).copied().unwrap_or(0) {
            out.push((*runner, Reason::WarmRunnerRetired));
        } else if *state == WarmState::Idle && is_old(runner, ctx) {
            out.push((*runner, Reason::WarmRunnerRecycled));
        }
    }
    out
}

/// Whether an idle warm runner has lived half its Job's `activeDeadlineSeconds`: a job it
/// takes now could be stopped by the deadline.
pub(super) fn is_old(runner: &WarmRunner, ctx: &WarmContext<'_>) -> bool {
    let half =
        Duration::from_secs(u64::try_from(ctx.pool.active_deadline_seconds / 2).unwrap_or(0));
    runner
        .created_at
        .as_ref()
        .is_some_and(|at| ctx.now.0 >= after(at, half))
}

/// Retires one runner: its registrations (unless one is active) and its Job, as one item.
pub(super) fn retire(
    runner: &WarmRunner,
    reason: Reason,
    warm_view: &WarmView<'_>,
    ctx: &WarmContext<'_>,
    decisions: &mut WarmDecisions,
) {
    let name = runner.name.as_str();
    let registrations: Vec<&RunnerRegistration> = warm_view
        .registrations
        .get(name)
        .into_iter()
        .flatten()
        .copied()
        .collect();
    if registrations
        .iter()
        .any(|r| r.status == RegistrationStatus::Active)
    {
        return;
    }
    let why = match reason {
        Reason::WarmRunnerNotStarted => format!(
            "warm runner {name} (label {}) did not start its runner within {}s",
            runner.label,
            ctx.start_deadline.as_secs()
        ),
        Reason::WarmRunnerRecycled => format!(
            "warm runner {name} (label {}) idled for half of activeDeadlineSeconds",
            runner.label
        ),
        _ if !warm_view.kept => format!(
            "warm runner {name} (label {}) is idle and the pool is quiet",
            runner.label
        ),
        _ => format!(
            "warm runner {name} (label {}) is more than spec.warmRunners asks for",
            runner.label
        ),
    };
    let registrations = match ctx.path {
        RunnerPath::Ephemeral => registrations
            .into_iter()
            .map(|r| {
                let message = format!("{why}: deleting its runner registration {}", r.id);
                RegistrationDeletion::of(r, reason, message)
            })
            .collect(),
        RunnerPath::Legacy => Vec::new(),
    };
    decisions.retire.push(WarmRetirement {
        registrations,
        job: Deletion {
            name: name.to_owned(),
            forgejo_job_id: 0,
            attempt: 0,
            reason,
            message: format!("{why}: deleting its Job"),
        },
    });
}

/// Registrations named like a warm runner of the pool that no live warm Job can use: its
/// Job finished or is gone, or a newer registration replaced it. Active ones are left.
pub(super) fn orphaned_registrations(warm_view: &WarmView<'_>, decisions: &mut WarmDecisions) {
    let live: BTreeMap<&str, &WarmRunner> = warm_view
        .live
        .iter()
        .map(|(r, _)| (r.name.as_str(), *r))
        .collect();
    let already: BTreeSet<i64> = decisions
        .delete_registrations
        .iter()
        .map(|d| d.id)
        .collect();
    for (name, regs) in &warm_view.registrations {
        for r in regs
            .iter()
            .filter(|r| r.status != RegistrationStatus::Active)
        {
            if already.contains(&r.id) {
                continue;
            }
            let (reason, why) = match live.get(name) {
                Some(runner) if runner.runner_uuid.as_ref().is_some_and(|u| u != &r.uuid) => (
                    Reason::RegistrationSuperseded,
                    format!(
                        "runner registration {} of warm runner {name} was replaced",
                        r.id
                    ),
                ),
                Some(_) => continue,
                None if warm_view.all.contains_key(name) => (
                    Reason::JobFinished,
                    format!(
                        "warm runner Job {name} finished: deleting its runner registration {}",
                        r.id
                    ),
                ),
                None => (
                    Reason::RegistrationOrphaned,
                    format!(
                        "no warm runner Job {name} exists: deleting its runner registration {}",
                        r.id
                    ),
                ),
            };
            decisions
                .delete_registrations
                .push(RegistrationDeletion::of(r, reason, why));
        }
    }
}
