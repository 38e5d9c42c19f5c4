//! New warm runners where a label has fewer ready than asked, and the credentials of those
//! without a Secret.

use super::*;

/// Credentials for live warm Jobs without a Secret (a crash between the Job and its
/// Secret); the operator checks the apiserver before it registers anything.
pub(super) fn missing_secrets(
    warm_view: &WarmView<'_>,
    ctx: &WarmContext<'_>,
    deleted: &BTreeSet<String>,
    decisions: &mut WarmDecisions,
) {
    for (runner, _) in &warm_view.live {
        if runner.secret_created_at.is_some() || deleted.contains(&runner.name) {
            continue;
        }
        let message = format!(
            "warm runner Job {} has no runner Secret: giving it one",
            runner.name
        );
        decisions.create_secrets.push(secret_request(
            runner.name.as_str(),
            &runner.label,
            warm_view,
            ctx,
            Reason::SecretMissing,
            message,
        ));
    }
}

/// Starts warm runners where a label has fewer ready ones than asked, within the free slots.
pub(super) fn start(
    warm_view: &WarmView<'_>,
    ctx: &WarmContext<'_>,
    leaving: &BTreeSet<&str>,
    decisions: &mut WarmDecisions,
) {
    let Some(warm) = &ctx.pool.warm else {
        return;
    };
    let mut free = ctx.free_slots;
    let used: BTreeSet<u32> = warm_view.all.values().map(|r| r.serial).collect();
    let mut serials = (0u32..).filter(|s| !used.contains(s));
    for (label, count) in &warm.runners {
        // An unknown one may be ready: counting it keeps a stale listing from starting more.
        let ready = warm_view
            .live
            .iter()
            .filter(|(r, s)| r.label == label.name && (s.is_ready() || *s == WarmState::Unknown))
            .filter(|(r, _)| !leaving.contains(r.name.as_str()))
            .count();
        for _ in ready..*count {
            if free == 0 {
                return;
            }
            let Some(serial) = serials.next() else {
                return;
            };
            let Ok(name) = WarmRunnerName::new(&ctx.pool.uid, serial) else {
                return;
            };
            free -= 1;
            decisions.live_after += 1;
            let mode = PodMode::for_label(label);
            let message = format!(
                "{ready} of {count} warm runner(s) of label {} are ready: creating Job {name} ({} pod)",
                label.name,
                mode.as_str()
            );
            decisions.create_secrets.push(secret_request(
                name.as_str(),
                &label.name,
                warm_view,
                ctx,
                Reason::NewJob,
                format!("new warm runner Job {name}: registering its runner"),
            ));
            decisions.create_jobs.push(JobCreation {
                name: name.as_str().to_owned(),
                pool: Arc::clone(ctx.pool),
                runner: RunnerFor::Warm {
                    name,
                    label: label.clone(),
                    fetch_interval: warm.fetch_interval,
                },
                path: ctx.path,
                forgejo_job_id: 0,
                attempt: 0,
                mode,
                reason: Reason::WarmRunnerWanted,
                message,
            });
        }
    }
}

/// The credential request of warm runner `name`; registrations already named after it
/// are stale.
pub(super) fn secret_request(
    name: &str,
    label: &str,
    warm_view: &WarmView<'_>,
    ctx: &WarmContext<'_>,
    reason: Reason,
    message: String,
) -> SecretRequest {
    let stale_registrations = warm_view
        .registrations
        .get(name)
        .into_iter()
        .flatten()
        .filter(|r| r.status != RegistrationStatus::Active)
        .map(|r| {
            let why = format!(
                "runner registration {} ({}) of warm runner {name} lost its token; a new one replaces it",
                r.id, r.uuid
            );
            RegistrationDeletion::of(r, Reason::CredentialsLost, why)
        })
        .collect();
    SecretRequest {
        job_name: name.to_owned(),
        forgejo_job_id: 0,
        attempt: 0,
        path: ctx.path,
        registration_name: name.to_owned(),
        registration_description: format!(
            "warm runner of {}/{} for label {label}",
            ctx.pool.namespace, ctx.pool.name
        ),
        stale_registrations,
        reason,
        message,
    }
}
