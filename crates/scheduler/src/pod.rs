//! The runner Job: one `batch/v1` Job per Forgejo job attempt, its pod built for the way
//! the job's label runs steps.
//!
//! Three pod modes, picked from the job's `runs-on` (its first entry that is a pool label,
//! the same rule forgejo-runner's `PickPlatform` uses):
//!
//! ```text
//! host        [runner: runner image, one-job]                      steps run in the runner
//! docker      [dind sidecar (privileged, native)] [runner: one-job] steps run in dind
//! kubernetes  [install-runner: cp binary] [runner: label image]     steps run in the label image
//! ```
//!
//! The runner reads its credentials from the Job's Secret (mounted as a file, the uuid as
//! an env var); the Forgejo API token is never referenced. The Job name is the pure function
//! of [`crate::naming`], so creating it twice fails with `AlreadyExists`.

use std::collections::BTreeMap;
use std::time::Duration;

use api::{LabelScheme, RunnerLabel};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cache::{
    CACHE_SECRET_DIR, CACHE_SECRET_VOLUME, CONFIG_DIR, CONFIG_FILE, CONFIG_VOLUME,
    DIND_BRIDGE_CIDR, DOCKER_RUNNER_CONFIG_KEY, RUNNER_CONFIG_KEY, config_volume, secret_volume,
};
use crate::input::{ForgejoJob, RunnerPath};
use crate::labels;
use crate::naming::{NameError, RunnerJobName, WarmRunnerName};
use crate::pool::{Pool, RunnerCache};
use crate::secret::{REGISTRATION_TOKEN_KEY, TOKEN_KEY, UUID_KEY};
use crate::template::merge_user_template;
use crate::volumes::secret_file_volume;

mod job;
mod spec;
pub use job::{runner_job, warm_runner_job};
use spec::pod_spec;
pub(crate) use spec::{pod_security_context, runner_security_context};

pub use crate::containers::{DIND_CONTAINER, INSTALL_RUNNER_CONTAINER, RUNNER_CONTAINER};
/// The Docker-in-Docker image of docker-mode pods.
pub const DIND_IMAGE: &str = "docker.io/library/docker:28-dind";

/// The runner binary in the runner image.
pub const RUNNER_BINARY: &str = "/bin/forgejo-runner";
/// Where kubernetes-mode pods get the runner binary.
pub const COPIED_RUNNER_DIR: &str = "/opt/forgejo-runner";
/// The runner binary in kubernetes-mode pods.
pub const COPIED_RUNNER_BINARY: &str = "/opt/forgejo-runner/forgejo-runner";
/// Where the runner credential Secret is mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/forgejo-runner";
/// The ephemeral runner's token file (v15 path).
pub const TOKEN_FILE: &str = "/var/run/forgejo-runner/token";
/// The registration token file (legacy path).
pub const REGISTRATION_TOKEN_FILE: &str = "/var/run/forgejo-runner/registration-token";
/// The runner's working directory (an emptyDir; `.runner` lives here on the legacy path).
pub const DATA_DIR: &str = "/data";
/// Where dind writes its TLS certificates (`client/` is what the runner reads).
pub const DOCKER_CERTS_DIR: &str = "/certs";
/// The env var holding the ephemeral runner's uuid, expanded in the runner's args.
pub const UUID_ENV: &str = "FORGEJO_RUNNER_UUID";
/// The runner image's user and group.
pub const RUNNER_UID: i64 = 1000;
/// Mode of the mounted credential files: readable by owner and `fsGroup`.
pub const CREDENTIALS_MODE: i32 = 0o440;

/// Volume: the runner's working directory.
pub const DATA_VOLUME: &str = "runner-data";
/// Volume: the runner credential Secret.
pub const CREDENTIALS_VOLUME: &str = "runner-credentials";
/// Volume: the copied runner binary (kubernetes mode).
pub const RUNNER_BIN_VOLUME: &str = "runner-bin";
/// Volume: dind's TLS certificates (docker mode).
pub const DOCKER_CERTS_VOLUME: &str = "docker-certs";
/// Volume: dind's image and container storage (docker mode).
pub const DOCKER_DATA_VOLUME: &str = "docker-data";

/// The shell script of legacy pods: register with the registration token read from its
/// file, then run one job. `$1` binary, `$2` server, `$3` runner name, `$4` labels, `$5`
/// (optional) the config file of the pool's cache.
pub const LEGACY_SCRIPT: &str = "set -eu
IFS= read -r token < /var/run/forgejo-runner/registration-token || [ -n \"$token\" ]
\"$1\" register --no-interactive --instance \"$2\" --token \"$token\" --name \"$3\" --labels \"$4\"
if [ -n \"${5:-}\" ]; then exec \"$1\" -c \"$5\" one-job --wait; fi
exec \"$1\" one-job --wait
";

/// How a pod runs the steps of its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodMode {
    /// In the runner container itself (`name:host`).
    Host,
    /// In containers of a Docker daemon sidecar (`name:docker://image`).
    Docker,
    /// In the pod's main container, which is `image`; the runner is copied in.
    Kubernetes {
        /// The label's image.
        image: String,
    },
}

impl PodMode {
    /// The mode for jobs whose platform label is `label`.
    pub fn for_label(label: &RunnerLabel) -> Self {
        match &label.scheme {
            LabelScheme::Host => Self::Host,
            LabelScheme::Docker { .. } => Self::Docker,
            LabelScheme::Kubernetes { image } => Self::Kubernetes {
                image: image.clone(),
            },
        }
    }

    /// A PascalCase name for messages and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Host => "Host",
            Self::Docker => "Docker",
            Self::Kubernetes { .. } => "Kubernetes",
        }
    }
}

/// Why no runner Job can be built for a Forgejo job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// The job runs on no label of the pool.
    #[error("Forgejo job {id} runs on [{runs_on}], which this pool's labels do not serve")]
    NoMatchingLabel {
        /// The Forgejo job id.
        id: i64,
        /// Its `runs-on`, comma-separated.
        runs_on: String,
    },
    /// No Job name can be made.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// The label that decides how a job runs: the first entry of `runs_on` that is a pool label.
pub fn pick_label<'a>(labels: &'a [RunnerLabel], runs_on: &[String]) -> Option<&'a RunnerLabel> {
    runs_on
        .iter()
        .find_map(|name| labels.iter().find(|l| &l.name == name))
}

/// The labels the runner declares: the job's `runs-on` (deduplicated, in order), as the pod
/// can honour them. A docker pod declares docker and host labels as they are (kubernetes
/// ones as docker labels of their image); host and kubernetes pods have no Docker daemon,
/// so they declare every label as `name:host` (forgejo-runner refuses to start with a
/// docker label and no daemon).
pub fn declared_labels(labels: &[RunnerLabel], runs_on: &[String], mode: &PodMode) -> Vec<String> {
    let mut declared: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for name in runs_on {
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let Some(label) = labels.iter().find(|l| &l.name == name) else {
            continue;
        };
        declared.push(match (mode, &label.scheme) {
            (PodMode::Docker, LabelScheme::Docker { image })
            | (PodMode::Docker, LabelScheme::Kubernetes { image }) => {
                format!("{}:docker://{image}", label.name)
            }
            _ => format!("{}:host", label.name),
        });
    }
    declared
}

/// What a runner fetches: one job attempt (`handle`), or any job of its labels; and how
/// often it asks (`interval`, the runner's default when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetch<'a> {
    /// The job attempt's handle (Forgejo v15+).
    pub handle: Option<&'a str>,
    /// `--fetch-interval`.
    pub interval: Option<Duration>,
}

/// A duration as forgejo-runner's flags read it (Go's `time.ParseDuration`): whole
/// milliseconds.
fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// The runner container's `command` and `args`.
///
/// v15: `<binary> one-job --url U --uuid $(FORGEJO_RUNNER_UUID) --token-url file:<token>
/// --label L… [--handle H] [--fetch-interval D] --wait`. Legacy: a shell that registers with the registration
/// token (`register --no-interactive --instance U --token … --name N --labels L,…`), then
/// `exec`s `one-job --wait` with the `.runner` file that wrote.
pub fn runner_command(
    binary: &str,
    server: &str,
    runner_name: &str,
    declared: &[String],
    fetch: Fetch<'_>,
    path: RunnerPath,
) -> (Vec<String>, Vec<String>) {
    match path {
        RunnerPath::Ephemeral => {
            let mut args: Vec<String> = [
                "one-job",
                "--url",
                server,
                "--uuid",
                &format!("$({UUID_ENV})"),
                "--token-url",
                &format!("file:{TOKEN_FILE}"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            for label in declared {
                args.push("--label".to_owned());
                args.push(label.clone());
            }
            if let Some(handle) = fetch.handle {
                args.push("--handle".to_owned());
                args.push(handle.to_owned());
            }
            if let Some(interval) = fetch.interval {
                args.push("--fetch-interval".to_owned());
                args.push(go_duration(interval));
            }
            args.push("--wait".to_owned());
            (vec![binary.to_owned()], args)
        }
        RunnerPath::Legacy => (
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                LEGACY_SCRIPT.to_owned(),
                "forgejo-runner-legacy".to_owned(),
            ],
            vec![
                binary.to_owned(),
                server.to_owned(),
                runner_name.to_owned(),
                declared.join(","),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(text: &str) -> RunnerLabel {
        RunnerLabel::parse(text).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn platform_label_is_the_first_runs_on_entry_the_pool_knows() {
        let labels = [
            label("docker"),
            label("x:host"),
            label("k:kubernetes://alpine"),
        ];
        let pick =
            |runs_on: &[&str]| pick_label(&labels, &strings(runs_on)).map(|l| l.name.clone());
        assert_eq!(pick(&["x", "docker"]).as_deref(), Some("x"));
        assert_eq!(pick(&["docker", "x"]).as_deref(), Some("docker"));
        assert_eq!(pick(&["other", "k"]).as_deref(), Some("k"));
        assert_eq!(pick(&["other"]), None);
    }

    #[test]
    fn declared_labels_fit_the_pod() {
        let labels = [
            label("docker:docker://node:22"),
            label("x:host"),
            label("k:kubernetes://alpine:3"),
        ];
        let runs_on = strings(&["docker", "x", "k", "x"]);
        assert_eq!(
            declared_labels(&labels, &runs_on, &PodMode::Docker),
            ["docker:docker://node:22", "x:host", "k:docker://alpine:3"]
        );
        assert_eq!(
            declared_labels(&labels, &runs_on, &PodMode::Host),
            ["docker:host", "x:host", "k:host"]
        );
    }

    #[test]
    fn v15_command_line_is_one_job_with_handle() {
        let (command, args) = runner_command(
            RUNNER_BINARY,
            "https://code.example.com",
            "forgejo-job-1-1-0123456789",
            &strings(&["docker:docker://node:22", "x:host"]),
            Fetch {
                handle: Some("h-1"),
                interval: None,
            },
            RunnerPath::Ephemeral,
        );
        assert_eq!(command, ["/bin/forgejo-runner"]);
        assert_eq!(
            args.join(" "),
            "one-job --url https://code.example.com --uuid $(FORGEJO_RUNNER_UUID) \
             --token-url file:/var/run/forgejo-runner/token --label docker:docker://node:22 \
             --label x:host --handle h-1 --wait"
        );
    }

    #[test]
    fn warm_command_line_fetches_any_job_at_its_interval() {
        let (_, args) = runner_command(
            RUNNER_BINARY,
            "https://code.example.com",
            "forgejo-warm-0-0123456789",
            &strings(&["docker:docker://node:22"]),
            Fetch {
                handle: None,
                interval: Some(Duration::from_millis(1500)),
            },
            RunnerPath::Ephemeral,
        );
        let args = args.join(" ");
        assert!(!args.contains("--handle"), "{args}");
        assert!(args.ends_with("--fetch-interval 1500ms --wait"), "{args}");
    }

    #[test]
    fn legacy_command_line_registers_then_runs_one_job() {
        let (command, args) = runner_command(
            RUNNER_BINARY,
            "https://code.example.com",
            "forgejo-job-1-0-0123456789",
            &strings(&["docker:docker://node:22", "x:host"]),
            Fetch::default(),
            RunnerPath::Legacy,
        );
        assert_eq!(command[..2], ["/bin/sh", "-c"]);
        assert!(command[2].contains("register --no-interactive --instance \"$2\" --token \"$token\" --name \"$3\" --labels \"$4\""));
        assert!(command[2].contains("exec \"$1\" one-job --wait"));
        assert!(command[2].contains(REGISTRATION_TOKEN_FILE));
        // Kubernetes expands $(VAR) and $$ in command and args: the script must use neither.
        assert!(!command[2].contains("$(") && !command[2].contains("$$"));
        assert_eq!(
            args,
            [
                "/bin/forgejo-runner",
                "https://code.example.com",
                "forgejo-job-1-0-0123456789",
                "docker:docker://node:22,x:host"
            ]
        );
    }
}
