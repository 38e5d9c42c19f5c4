//! The shared cache's decisions (`cache_steps`, `CacheReport`, `cache_event`): examples for
//! each mode and the server's states, and properties over every observation.

use std::time::Duration;

use api::CacheMode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use scheduler::{
    CACHE_REAPPLY_AFTER, CacheApply, CacheObservation, CacheReport, LastApplied, cache_event,
    cache_steps, diagnose_cache_server,
};
use serde_json::json;

fn server(available: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "pool-cache"},
        "status": {"availableReplicas": available},
    }))
    .unwrap()
}

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "pool-cache-1"}, "status": status})).unwrap()
}

fn observe(
    mode: CacheMode,
    server: Option<&Deployment>,
    last: Option<LastApplied>,
) -> CacheObservation<'_> {
    CacheObservation {
        mode,
        external_set: true,
        server,
        last_applied: last,
    }
}

fn recent(mode: CacheMode) -> Option<LastApplied> {
    Some(LastApplied {
        mode,
        unchanged: true,
        age: Duration::from_secs(5),
    })
}

#[test]
fn a_managed_cache_is_applied_until_the_server_exists_then_only_every_ten_minutes() {
    let up = server(1);
    let first = cache_steps(&observe(CacheMode::Managed, None, None));
    assert_eq!(first.apply, CacheApply::Managed);
    assert!(!first.remove_managed);
    let recorded_but_no_server = cache_steps(&observe(
        CacheMode::Managed,
        None,
        recent(CacheMode::Managed),
    ));
    assert_eq!(recorded_but_no_server.apply, CacheApply::Managed);
    let steady = cache_steps(&observe(
        CacheMode::Managed,
        Some(&up),
        recent(CacheMode::Managed),
    ));
    assert_eq!(steady.apply, CacheApply::Unchanged);
    let stale = LastApplied {
        age: CACHE_REAPPLY_AFTER,
        ..recent(CacheMode::Managed).unwrap()
    };
    let due = cache_steps(&observe(CacheMode::Managed, Some(&up), Some(stale)));
    assert_eq!(due.apply, CacheApply::Managed);
    let edited = LastApplied {
        unchanged: false,
        ..recent(CacheMode::Managed).unwrap()
    };
    let changed = cache_steps(&observe(CacheMode::Managed, Some(&up), Some(edited)));
    assert_eq!(changed.apply, CacheApply::Managed);
}

#[test]
fn disabling_removes_a_server_seen_or_applied_and_applies_nothing() {
    let up = server(1);
    let seen = cache_steps(&observe(CacheMode::Disabled, Some(&up), None));
    assert!(seen.remove_managed);
    assert_eq!(seen.apply, CacheApply::Nothing);
    let applied = cache_steps(&observe(
        CacheMode::Disabled,
        None,
        recent(CacheMode::External),
    ));
    assert!(applied.remove_managed, "the External config goes too");
    let never = cache_steps(&observe(CacheMode::Disabled, None, None));
    assert!(!never.remove_managed);
}

#[test]
fn switching_to_external_removes_the_managed_server_and_applies_the_config() {
    let up = server(1);
    let steps = cache_steps(&observe(
        CacheMode::External,
        Some(&up),
        recent(CacheMode::Managed),
    ));
    assert!(steps.remove_managed);
    assert_eq!(steps.apply, CacheApply::External);
    let without = CacheObservation {
        external_set: false,
        ..observe(CacheMode::External, None, None)
    };
    assert_eq!(cache_steps(&without).apply, CacheApply::Nothing);
}

#[test]
fn the_report_says_available_starting_or_failing_with_the_pods_words() {
    let available = CacheReport::managed("pool-cache", Some(&server(1)), None);
    assert!(available.ready && available.reason == "ServerAvailable");
    let starting = CacheReport::managed("pool-cache", Some(&server(0)), None);
    assert_eq!(
        (starting.ready, starting.reason, starting.problem),
        (false, "ServerStarting", false)
    );
    assert!(
        starting.message.contains("no pod yet"),
        "{}",
        starting.message
    );

    let unschedulable = pod(
        json!({"conditions": [{"type": "PodScheduled", "status": "False",
        "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"}]}),
    );
    let report = CacheReport::managed("pool-cache", Some(&server(0)), Some(&unschedulable));
    assert_eq!((report.reason, report.problem), ("ServerFailing", true));
    assert!(
        report
            .message
            .contains("unbound immediate PersistentVolumeClaims"),
        "{}",
        report.message
    );

    let pending = pod(json!({"phase": "Pending"}));
    let report = CacheReport::managed("pool-cache", None, Some(&pending));
    assert_eq!((report.reason, report.problem), ("ServerStarting", false));
}

#[test]
fn a_crash_loop_quotes_what_the_server_said_when_it_exited() {
    let crashing = pod(json!({"containerStatuses": [{
        "name": "cache-server", "image": "runner", "imageID": "", "ready": false,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
            "message": "back-off 40s restarting failed container=cache-server"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
            "message": "Error: mkdir /var/lib/forgejo-runner-cache/cache: permission denied\n"}},
    }]}));
    let (problem, detail) = diagnose_cache_server(Some(&crashing));
    assert!(problem);
    assert!(
        detail.ends_with(
            "exited with code 1 (Error): Error: mkdir /var/lib/forgejo-runner-cache/cache: permission denied"
        ),
        "{detail}"
    );
}

#[test]
fn an_event_marks_a_new_problem_and_a_recovery_and_nothing_else() {
    let failing = CacheReport::failed("NameConflict", "Service \"pool-cache\" exists".to_owned());
    let event = cache_event(None, &failing).unwrap();
    assert_eq!(
        (event.warning, event.reason.as_str()),
        (true, "CacheNameConflict")
    );
    let same = Some((false, "NameConflict", failing.message.as_str()));
    assert_eq!(cache_event(same, &failing), None);
    let ready = CacheReport::external("http://cache:4000");
    let recovered = cache_event(same, &ready).unwrap();
    assert_eq!(
        (recovered.warning, recovered.reason.as_str()),
        (false, "CacheReady")
    );
    assert_eq!(
        cache_event(None, &ready),
        None,
        "no event for a first ready"
    );
    assert_eq!(cache_event(None, &CacheReport::disabled()), None);
}

fn any_mode() -> impl Strategy<Value = CacheMode> {
    prop_oneof![
        Just(CacheMode::Managed),
        Just(CacheMode::External),
        Just(CacheMode::Disabled)
    ]
}

fn any_last() -> impl Strategy<Value = Option<LastApplied>> {
    proptest::option::of((any_mode(), any::<bool>(), 0u64..1200).prop_map(
        |(mode, unchanged, secs)| LastApplied {
            mode,
            unchanged,
            age: Duration::from_secs(secs),
        },
    ))
}

proptest! {
    #[test]
    fn the_steps_follow_the_mode_whatever_was_observed(
        mode in any_mode(),
        external_set in any::<bool>(),
        server_state in proptest::option::of(0i32..2),
        last in any_last(),
    ) {
        let deployment = server_state.map(server);
        let steps = cache_steps(&CacheObservation {
            mode,
            external_set,
            server: deployment.as_ref(),
            last_applied: last,
        });
        // A managed pool never removes its own server; any other removes one it sees.
        prop_assert_eq!(steps.remove_managed && mode == CacheMode::Managed, false);
        if mode != CacheMode::Managed && deployment.is_some() {
            prop_assert!(steps.remove_managed);
        }
        // Disabled applies nothing; Managed and External (with its settings) always have
        // something mounted: applied now, or unchanged and recent.
        match mode {
            CacheMode::Disabled => prop_assert_eq!(steps.apply, CacheApply::Nothing),
            CacheMode::External if !external_set => prop_assert_eq!(steps.apply, CacheApply::Nothing),
            _ => prop_assert_ne!(steps.apply, CacheApply::Nothing),
        }
        // Skipping the write needs the same mode, the same objects, within ten minutes.
        if steps.apply == CacheApply::Unchanged {
            let last = last.unwrap();
            prop_assert!(last.mode == mode && last.unchanged && last.age < CACHE_REAPPLY_AFTER);
            prop_assert!(mode != CacheMode::Managed || deployment.is_some());
        }
    }

    #[test]
    fn an_event_comes_only_with_a_change_and_a_problem_is_never_ready(
        ready in any::<bool>(),
        problem in any::<bool>(),
        reason in prop_oneof![Just("ServerAvailable"), Just("ServerFailing"), Just("ApplyFailed")],
        message in "[a-z ]{0,12}",
        previous in proptest::option::of((any::<bool>(), prop_oneof![Just("ServerAvailable"), Just("ServerFailing")], "[a-z ]{0,12}")),
    ) {
        let report = if problem {
            CacheReport::failed(reason, message.clone())
        } else {
            CacheReport { ready, reason, message: message.clone(), problem: false }
        };
        prop_assert!(!(report.problem && report.ready));
        let before = previous.as_ref().map(|(r, reason, m)| (*r, *reason, m.as_str()));
        let event = cache_event(before, &report);
        let same = (report.ready, report.reason, report.message.as_str());
        // Seen again, nothing to say.
        prop_assert_eq!(cache_event(Some(same), &report), None);
        if let Some(event) = event {
            prop_assert_eq!(event.warning, report.problem);
            prop_assert!(report.problem || (report.ready && before.is_some_and(|(r, _, _)| !r)));
        }
    }
}
