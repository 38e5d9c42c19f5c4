//! Why a pool's cache server pod is not serving, read from its status alone: the words
//! `CacheReady` quotes.

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};

/// Container waiting reasons that mean the server cannot start without a change.
const FAILING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The most of a server's last words quoted, in characters.
const MAX_QUOTE: usize = 300;

/// Whether the pod `name` needs someone, and what it says, for its `status`.
///
/// A server that exited with an error is quoted by how it ended (its exit code, reason and
/// last log line, which the container's `FallbackToLogsOnError` puts in
/// `lastState.terminated.message`): that is the server's own error, such as `mkdir
/// /var/lib/forgejo-runner-cache/cache: permission denied`, where the crash loop's waiting
/// message only says "back-off 10s restarting failed container". The words stay the same
/// between restarts and back-offs, so the condition (and its event) changes only when
/// the error does. The cache server logs no secret.
pub(super) fn diagnose_pod(name: &str, status: &PodStatus) -> (bool, String) {
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(condition) = unschedulable {
        let why = condition.message.clone().unwrap_or_default();
        return (true, format!("pod {name} cannot be scheduled: {why}"));
    }
    let containers = || status.container_statuses.iter().flatten();
    if let Some(failure) = containers().filter(|c| !c.ready).find_map(last_failure) {
        return (true, format!("pod {name}: {failure}"));
    }
    let waiting = containers()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| w.reason.as_deref().is_some_and(|r| FAILING.contains(&r)));
    if let Some(waiting) = waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        return (true, format!("pod {name}: {reason}: {message}"));
    }
    let phase = status.phase.clone().unwrap_or_else(|| "Pending".to_owned());
    (false, format!("pod {name} is {phase}"))
}

/// How the container's latest run ended, when it ended with an error: its exit code,
/// reason and last log line.
fn last_failure(container: &ContainerStatus) -> Option<String> {
    let terminated = container
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| {
            container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
        })?;
    if terminated.exit_code == 0 {
        return None;
    }
    let reason = terminated.reason.as_deref().unwrap_or("Error");
    let ended = format!(
        "its container exited with code {} ({reason})",
        terminated.exit_code
    );
    // The error is the last thing a server prints before it exits.
    let last_line = terminated
        .message
        .as_deref()
        .and_then(|m| m.lines().map(str::trim).rfind(|l| !l.is_empty()));
    Some(match last_line {
        Some(line) => format!("{ended}: {}", shortened(line)),
        None => ended,
    })
}

/// `text`, cut to [`MAX_QUOTE`] characters.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(value: serde_json::Value) -> PodStatus {
        serde_json::from_value(value).unwrap()
    }

    /// A crash loop as the kubelet reports it for `forgejo-runner cache-server` on a volume
    /// it cannot write.
    fn crash_loop(message: Option<&str>) -> PodStatus {
        let mut terminated = json!({"exitCode": 1, "reason": "Error"});
        if let Some(message) = message {
            terminated["message"] = json!(message);
        }
        status(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "cache-server", "image": "runner", "imageID": "", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 40s restarting failed container=cache-server pod=pool-cache-1"
                }},
                "lastState": {"terminated": terminated}
            }]
        }))
    }

    #[test]
    fn a_crash_loop_quotes_the_servers_last_words_not_the_back_off() {
        let looping = crash_loop(Some(
            "Error: mkdir /var/lib/forgejo-runner-cache/cache: permission denied\n",
        ));
        let (problem, words) = diagnose_pod("pool-cache-1", &looping);
        assert!(problem);
        assert_eq!(
            words,
            "pod pool-cache-1: its container exited with code 1 (Error): Error: mkdir /var/lib/forgejo-runner-cache/cache: permission denied"
        );
        // Between restarts the same words: the condition does not flap.
        let mut between = crash_loop(Some(
            "Error: mkdir /var/lib/forgejo-runner-cache/cache: permission denied",
        ));
        let container = &mut between.container_statuses.as_mut().unwrap()[0];
        container.state = serde_json::from_value(json!({"running": {}})).unwrap();
        assert_eq!(diagnose_pod("pool-cache-1", &between), (true, words));
    }

    #[test]
    fn without_last_words_the_exit_is_quoted_and_long_words_are_cut() {
        let (_, words) = diagnose_pod("p", &crash_loop(None));
        assert_eq!(words, "pod p: its container exited with code 1 (Error)");
        let long = "x".repeat(1000);
        let (_, words) = diagnose_pod("p", &crash_loop(Some(&format!("first\n{long}\n\n"))));
        assert!(
            words.ends_with(&format!("(Error): {}…", "x".repeat(MAX_QUOTE))),
            "{words}"
        );
    }

    #[test]
    fn image_pulls_unschedulable_pods_and_starting_pods_are_told_apart() {
        let pulling = status(json!({
            "phase": "Pending",
            "containerStatuses": [{
                "name": "cache-server", "image": "runner", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"runner\""}}
            }]
        }));
        assert_eq!(
            diagnose_pod("p", &pulling),
            (
                true,
                "pod p: ImagePullBackOff: Back-off pulling image \"runner\"".to_owned()
            )
        );
        let unschedulable = status(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False",
                             "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"}]
        }));
        assert_eq!(
            diagnose_pod("p", &unschedulable),
            (
                true,
                "pod p cannot be scheduled: 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims".to_owned()
            )
        );
        let starting = status(json!({
            "phase": "Pending",
            "containerStatuses": [{
                "name": "cache-server", "image": "runner", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]
        }));
        assert_eq!(
            diagnose_pod("p", &starting),
            (false, "pod p is Pending".to_owned())
        );
    }

    /// A server that once failed and now serves (Ready) is not failing.
    #[test]
    fn a_ready_server_with_an_old_failure_is_not_failing() {
        let mut recovered = crash_loop(Some("Error: boom"));
        let container = &mut recovered.container_statuses.as_mut().unwrap()[0];
        container.ready = true;
        container.state = serde_json::from_value(json!({"running": {}})).unwrap();
        assert_eq!(
            diagnose_pod("p", &recovered),
            (false, "pod p is Running".to_owned())
        );
    }
}
