//! The command line, and the start-up path it drives: logging, the kube client, the admin
//! server, leader election and the controller, wired together and shut down on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;

use crate::admin::{self, Readiness};
use crate::controller::{self, ControllerConfig};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::telemetry::LogFormat;

/// Schedules one Kubernetes Job per Forgejo Actions job waiting for a runner.
///
/// Watches RunnerDeployments (forgejo.runners.dev/v1alpha1), polls Forgejo for their waiting
/// jobs, and creates a one-shot runner Job for each. Every flag can also be set by the
/// environment variable named in brackets.
#[derive(Debug, Parser)]
#[command(name = "forgejo-runner-controller", version, about, long_about)]
pub struct Args {
    /// Path of a kubeconfig; without it, $KUBECONFIG, ~/.kube/config, then the in-cluster
    /// ServiceAccount are tried, in that order.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Context of the kubeconfig to use (default: its current context).
    #[arg(long, env = "FRC_KUBE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// Watch RunnerDeployments of this namespace only; repeat it (or separate with commas)
    /// for several. Default: all namespaces. The namespaced install (deploy/components/namespaced)
    /// grants rights in the listed namespaces only.
    #[arg(
        long,
        env = "FRC_WATCH_NAMESPACE",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub namespace: Vec<String>,

    /// Let `forgejoServer` resolve to link-local and cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200); refused by default so that
    /// a pool cannot send its token to a metadata service.
    #[arg(long, env = "FRC_ALLOW_LINK_LOCAL_FORGEJO", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_link_local_forgejo: bool,

    /// Let `jobTemplate` ask for privileged containers, host namespaces, hostPath volumes,
    /// host ports and ServiceAccount tokens; refused by default (see docs/install.md).
    #[arg(long, env = "FRC_ALLOW_PRIVILEGED_RUNNERS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_privileged_runners: bool,

    /// Address of the admin server: /healthz, /readyz and /metrics.
    #[arg(long, env = "FRC_ADMIN_ADDR", default_value = "127.0.0.1:8080")]
    pub admin_addr: SocketAddr,

    /// Address of the webhook receiver, e.g. `0.0.0.0:8443`: Forgejo's `workflow_job`
    /// deliveries to `/webhooks/{namespace}/{pool}` wake pools with `spec.webhook`. Off by
    /// default (see docs/operations.md#webhooks).
    #[arg(long, env = "FRC_WEBHOOK_ADDR", value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,

    /// Which optional labels the job metrics carry, comma-separated: `repository` (the
    /// job's `owner/name`), `label` (its `runs-on` labels), both, or none (`""`).
    #[arg(
        long,
        env = "FRC_JOB_METRIC_LABELS",
        default_value = "repository,label"
    )]
    pub job_metric_labels: crate::metrics::JobMetricLabels,

    /// Log format.
    #[arg(long, env = "FRC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `info,operator=debug` (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "FRC_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Elect a leader on a Lease so that only one replica schedules (`false` for one replica).
    #[arg(long, env = "FRC_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "FRC_LEASE_NAME",
        default_value = "forgejo-runner-controller"
    )]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (default: the operator's own namespace in a
    /// cluster, else `default`).
    #[arg(long, env = "FRC_LEASE_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease (default: $POD_NAME, else the host name and pid).
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub identity: Option<String>,

    /// Seconds a Lease is held without renewal before another replica may take it.
    #[arg(long, env = "FRC_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub lease_duration_seconds: u64,

    /// Timeout of one request to Forgejo, e.g. `10s`.
    #[arg(long, env = "FRC_FORGEJO_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub forgejo_timeout: Duration,

    /// How long a runner Job whose Forgejo job no longer waits (cancelled, or taken by another
    /// runner) and whose runner runs nothing is kept, counted from when its runner started and
    /// this replica first saw the job not waiting (or, if the runner has not started, from the
    /// Job's creation), e.g. `60s`.
    #[arg(long, env = "FRC_NOT_WAITING_GRACE", default_value = "60s", value_parser = parse_period)]
    pub not_waiting_grace: Duration,

    /// How long a runner pod may fail to pull an image (or build a container's config)
    /// before its Job is reported and deleted, e.g. `5m`.
    #[arg(long, env = "FRC_IMAGE_PULL_DEADLINE", default_value = "5m", value_parser = parse_period)]
    pub image_pull_deadline: Duration,

    /// How long a runner pod may stay unschedulable before its Job is reported and deleted.
    #[arg(long, env = "FRC_UNSCHEDULABLE_DEADLINE", default_value = "10m", value_parser = parse_period)]
    pub unschedulable_deadline: Duration,

    /// How long a runner Job whose pods Kubernetes refuses (a `FailedCreate` event, e.g. the
    /// namespace's Pod Security level) may stay without any pod before it is reported and
    /// deleted, e.g. `60s`. A Job merely waiting for the job controller stays.
    #[arg(long, env = "FRC_POD_CREATE_DEADLINE", default_value = "60s", value_parser = parse_period)]
    pub pod_create_deadline: Duration,

    /// How long a finished runner Job whose Forgejo job still waits is kept before a new one
    /// replaces it.
    #[arg(long, env = "FRC_RETRY_AFTER", default_value = "60s", value_parser = parse_period)]
    pub retry_after: Duration,

    /// A PEM bundle of extra CA certificates to trust for Forgejo servers (self-hosted CAs).
    #[arg(long, env = "FRC_FORGEJO_CA_FILE", value_name = "PATH")]
    pub forgejo_ca_file: Option<PathBuf>,
}

fn parse_period(text: &str) -> Result<Duration, String> {
    let duration = api::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(24 * 3600) {
        return Err(format!("{text:?} is outside 1s..24h"));
    }
    Ok(duration)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = api::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(100) || duration > Duration::from_secs(600) {
        return Err(format!("{text:?} is outside 100ms..10m"));
    }
    Ok(duration)
}

impl Args {
    /// Parses the command line and runs the operator until SIGTERM or SIGINT.
    pub async fn parse_and_run() -> anyhow::Result<()> {
        Self::parse().run().await
    }

    /// Runs the operator until SIGTERM or SIGINT.
    pub async fn run(self) -> anyhow::Result<()> {
        crate::telemetry::init(self.log_format, &self.log_level)?;
        let client = self.kube_client().await?;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let readiness = Readiness::default();

        let (admin_addr, admin) =
            admin::bind(self.admin_addr, Arc::new(registry), readiness.clone())
                .await
                .with_context(|| format!("binding the admin server to {}", self.admin_addr))?;
        tracing::info!(%admin_addr, "admin server listening (/healthz, /readyz, /metrics)");
        let admin = tokio::spawn(admin);

        let pools = crate::webhook::PoolDirectory::default();
        let webhook = match self.webhook_addr {
            Some(addr) => {
                let receiver = crate::webhook::Receiver {
                    pools: pools.clone(),
                    secrets: crate::webhook::HookSecrets::new(client.clone()),
                    waker: crate::webhook::Waker::new(client.clone(), metrics.webhook.clone()),
                    metrics: metrics.webhook.clone(),
                };
                let (webhook_addr, serve) = crate::webhook::bind(addr, receiver)
                    .await
                    .with_context(|| format!("binding the webhook receiver to {addr}"))?;
                tracing::info!(%webhook_addr, "webhook receiver listening (POST /webhooks/{{namespace}}/{{pool}})");
                Some(tokio::spawn(serve))
            }
            None => None,
        };

        let extra_ca = match &self.forgejo_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --forgejo-ca-file {}", path.display()))?,
            ),
            None => None,
        };

        let shutdown = shutdown_signal();
        let leadership = if self.leader_election {
            let namespace = match &self.lease_namespace {
                Some(ns) => ns.clone(),
                None => in_cluster_namespace().unwrap_or_else(|| "default".to_owned()),
            };
            leader::elect(
                client.clone(),
                LeaseConfig {
                    name: self.lease_name.clone(),
                    namespace,
                    identity: self.identity.clone().unwrap_or_else(default_identity),
                    duration_seconds: self.lease_duration_seconds,
                },
                metrics.lease.clone(),
            )
            .await?
        } else {
            leader::always_leader(&metrics.lease)
        };
        readiness.set_lease_known();

        let config = ControllerConfig {
            namespaces: self.namespace.clone(),
            allow_link_local_forgejo: self.allow_link_local_forgejo,
            allow_privileged_runners: self.allow_privileged_runners,
            forgejo_timeout: self.forgejo_timeout,
            forgejo_extra_ca: extra_ca,
            timeouts: scheduler::Timeouts {
                not_waiting_grace: self.not_waiting_grace,
                image_pull_deadline: self.image_pull_deadline,
                unschedulable_deadline: self.unschedulable_deadline,
                pod_create_deadline: self.pod_create_deadline,
                retry_after: self.retry_after,
            },
            job_metric_labels: self.job_metric_labels,
        };
        let result = controller::run(
            client,
            config,
            metrics,
            readiness.clone(),
            leadership.receiver(),
            shutdown,
            pools,
        )
        .await;
        readiness.set_shutting_down();
        leadership.release().await;
        admin.abort();
        if let Some(webhook) = webhook {
            webhook.abort();
        }
        result.map_err(anyhow::Error::from)
    }

    async fn kube_client(&self) -> anyhow::Result<kube::Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("loading kubeconfig {}", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("loading the default kubeconfig with --context")?,
            None => kube::Config::infer()
                .await
                .context("no kubeconfig found and not running in a cluster: pass --kubeconfig")?,
        };
        kube::Client::try_from(config).context("creating the Kubernetes client")
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
}

fn in_cluster_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "operator".to_owned());
    format!("{host}-{}", std::process::id())
}
