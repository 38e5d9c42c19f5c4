//! The operator's fast tier: reconcile steps against a mocked apiserver (`tower-test`) and the
//! Forgejo stand-in on loopback, for the orderings the cluster tier only sees by chance.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use api::RunnerDeployment;
use forgejo_stand_in::{StandIn, StandInConfig};
use scheduler::{Deletion, ForgejoJob, Plan, PlanInput, Reason, RunnerPath};

use super::executor::{CreateOutcome, PlanExecutor};
use super::{Context, Stores, deleted, finalize, recent, start_pause, sweep, token_watch};
use crate::metrics::Metrics;
use crate::polls::{ForgejoSettings, SharedPolls};

const TOKEN: &str = "unit-tier-token";
type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// What the mocked apiserver was asked, as `METHOD path`, in order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    /// The calls other than event publishing.
    fn writes_and_reads(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|c| !c.contains("/events"))
            .collect()
    }
}

/// Answers like an apiserver that accepts every write: echoes created objects, says 404 for
/// GETs of Secrets, and lets `answer` override any call (status, body).
fn serve(
    mut handle: Handle,
    calls: Calls,
    answer: impl Fn(&str, &str) -> Option<(u16, Value)> + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            calls.0.lock().unwrap().push(format!("{method} {path}"));
            let (status, value) = answer(&method, &path).unwrap_or_else(|| match method.as_str() {
                "POST" => {
                    // Created objects get a uid, as the apiserver gives them.
                    let mut created: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                    created["metadata"]["uid"] = json!("5f1c0c3e-0000-4000-8000-000000000001");
                    (201, created)
                }
                "GET" if path.contains("/secrets/") => (404, not_found()),
                _ => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
            });
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409})
}

struct Unit {
    ctx: Context,
    calls: Calls,
    leader: watch::Sender<bool>,
    forgejo: StandIn,
}

impl Unit {
    fn new(answer: impl Fn(&str, &str) -> Option<(u16, Value)> + Send + 'static) -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "ci");
        let calls = Calls::default();
        serve(handle, calls.clone(), answer);
        let (leader, receiver) = watch::channel(true);
        let (recovered, _) = mpsc::unbounded_channel();
        let metrics = Metrics::new(&mut Registry::default());
        let settings = ForgejoSettings {
            request_timeout: Duration::from_secs(5),
            ..ForgejoSettings::default()
        };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), Reporter::from("unit-tier")),
            client,
            polls: Arc::new(SharedPolls::new(
                settings,
                metrics.forgejo.clone(),
                recovered,
            )),
            allow_privileged_runners: false,
            metrics,
            stores: Stores {
                jobs: reflector::store().0,
                pods: reflector::store().0,
                secrets: reflector::store().0,
                cache_servers: reflector::store().0,
            },
            writer: super::writer::Writer::new(receiver, super::MAX_CONCURRENT_REQUESTS),
            timeouts: scheduler::Timeouts::default(),
            first_seen: Mutex::default(),
            failures: Mutex::default(),
            start_pause: start_pause::StartPause::default(),
            deleted: deleted::DeletedRegistrations::default(),
            sweeps: sweep::RegistrationSweeps::default(),
            tokens: token_watch::TokenSecrets::default(),
            recent: recent::RecentWrites::default(),
            caches: super::cache::AppliedCaches::default(),
            not_waiting: super::not_waiting::NotWaitingSince::default(),
            wakes: crate::webhook::AnsweredWakes::default(),
            hooks: super::hook::RegisteredHooks::default(),
            jobs_seen: super::lifecycle::JobsSeen::default(),
        };
        let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", TOKEN));
        Self {
            ctx,
            calls,
            leader,
            forgejo,
        }
    }

    fn pool(&self) -> RunnerDeployment {
        serde_json::from_value(json!({
            "apiVersion": "forgejo.runners.dev/v1alpha1",
            "kind": "RunnerDeployment",
            "metadata": {"name": "pool", "namespace": "ci", "uid": "0123456789abcdef", "generation": 1},
            "spec": {
                "forgejoServer": self.forgejo.url(),
                "organization": "faro",
                "labels": "docker",
                "tokenSecretRef": {"name": "forgejo-token"},
            }
        }))
        .unwrap()
    }

    fn client(&self) -> forgejo::Client {
        forgejo::Client::new(
            &self.forgejo.url(),
            forgejo::Token::new(TOKEN),
            forgejo::ClientOptions::default(),
        )
        .unwrap()
    }
}

/// The plan for one waiting job, plus the deletion of a stale Job.
fn plan_for_one_job(rd: &RunnerDeployment) -> Plan {
    plan_with_owned(rd, &[])
}

/// The scheduler's plan for one waiting job (id 7) given the Jobs the pool owns.
fn plan_with_owned(rd: &RunnerDeployment, owned: &[scheduler::OwnedJob]) -> Plan {
    let waiting = ForgejoJob {
        id: 7,
        attempt: Some(1),
        handle: Some("handle-7".into()),
        repo_id: 1,
        owner_id: 1,
        name: "build".into(),
        runs_on: vec!["docker".into()],
        status: "waiting".into(),
        task_id: 0,
    };
    let input = PlanInput {
        pool: rd,
        forgejo_jobs: Some(&[waiting]),
        owned_jobs: owned,
        registrations: &[],
        runner_path: RunnerPath::Ephemeral,
        timeouts: scheduler::Timeouts::default(),
        cache: None,
        warm: Default::default(),
        not_waiting_since: &[],
    };
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let mut plan = scheduler::plan(&input, now).unwrap();
    plan.delete_jobs.push(Deletion {
        name: "forgejo-job-stale".into(),
        forgejo_job_id: 3,
        attempt: 1,
        reason: Reason::ForgejoJobNotWaiting,
        message: "stale".into(),
    });
    plan
}

fn scope() -> forgejo::Scope {
    forgejo::Scope::Organization("faro".into())
}

#[tokio::test]
async fn a_plan_is_carried_out_deletions_first_then_the_job_then_its_credentials() {
    let unit = Unit::new(|_, _| None);
    let rd = unit.pool();
    let plan = plan_for_one_job(&rd);
    assert_eq!(plan.create_jobs.len(), 1);
    let client = unit.client();
    let problems = PlanExecutor::new(&unit.ctx, &rd, &client, &scope())
        .carry_out(&plan)
        .await;
    assert!(
        problems.job_refused.is_none() && problems.without_credentials.is_none(),
        "{problems:?}"
    );
    let job = &plan.create_jobs[0].name;
    assert_eq!(
        unit.calls.writes_and_reads(),
        vec![
            "DELETE /apis/batch/v1/namespaces/ci/jobs/forgejo-job-stale".to_owned(),
            "POST /apis/batch/v1/namespaces/ci/jobs".to_owned(),
            format!("GET /api/v1/namespaces/ci/secrets/{job}"),
            "POST /api/v1/namespaces/ci/secrets".to_owned(),
        ]
    );
    // The runner was registered in Forgejo between the Job and its Secret.
    assert_eq!(unit.forgejo.runners().len(), 1);
}

#[tokio::test]
async fn a_job_that_already_exists_is_no_error_and_no_event() {
    let unit = Unit::new(|method, path| {
        (method == "POST" && path.ends_with("/jobs")).then(|| (409, conflict()))
    });
    let rd = unit.pool();
    let plan = plan_for_one_job(&rd);
    let client = unit.client();
    let scope = scope();
    let executor = PlanExecutor::new(&unit.ctx, &rd, &client, &scope);
    let outcome = executor.create_job(&plan.create_jobs[0]).await;
    assert!(
        matches!(outcome, CreateOutcome::AlreadyExists),
        "{outcome:?}"
    );
    assert!(
        !unit.calls.all().iter().any(|c| c.contains("/events")),
        "an event for a Job another reconcile made: {:?}",
        unit.calls.all()
    );
    let failures = unit.ctx.metrics.reconcile.create_failures.clone();
    let mut text = String::new();
    let mut registry = Registry::default();
    registry.register("create_failures", "", failures);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        !text.contains("reason="),
        "a 409 was counted as a failure:\n{text}"
    );
}

#[tokio::test]
async fn leadership_lost_mid_reconcile_stops_every_later_write() {
    let leader: Arc<Mutex<Option<watch::Sender<bool>>>> = Arc::default();
    let lose = leader.clone();
    let unit = Unit::new(move |method, _| {
        // The first write of the reconcile is the last: the Lease goes while it is in flight.
        if method == "DELETE"
            && let Some(sender) = lose.lock().unwrap().as_ref()
        {
            sender.send_replace(false);
        }
        None
    });
    *leader.lock().unwrap() = Some(unit.leader.clone());
    let rd = unit.pool();
    let plan = plan_for_one_job(&rd);
    let client = unit.client();
    PlanExecutor::new(&unit.ctx, &rd, &client, &scope())
        .carry_out(&plan)
        .await;
    let calls = unit.calls.writes_and_reads();
    assert_eq!(
        calls,
        vec!["DELETE /apis/batch/v1/namespaces/ci/jobs/forgejo-job-stale".to_owned()],
        "writes after leadership was lost"
    );
    assert!(
        unit.forgejo.runners().is_empty(),
        "a runner registered after leadership was lost"
    );
}

#[tokio::test]
async fn cleanup_lets_a_pool_go_only_after_ten_minutes_of_unreachable_forgejo() {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "forgejo-token", "namespace": "ci"},
        "data": {"token": "dW5pdC10aWVyLXRva2Vu"},
    });
    let unit = Unit::new(move |method, path| {
        (method == "GET" && path.ends_with("/secrets/forgejo-token")).then(|| (200, secret.clone()))
    });
    // A server that refuses connections: the cleanup cannot reach Forgejo.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut rd = unit.pool();
    rd.spec.forgejo_server = url;
    let deleted_ago = |minutes: i64| {
        let at = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_mins(minutes);
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at)
    };
    let ctx = Arc::new(unit.ctx);

    rd.metadata.deletion_timestamp = Some(deleted_ago(1));
    let early = finalize::cleanup(Arc::new(rd.clone()), ctx.clone()).await;
    assert!(early.is_err(), "let go after 1 minute: {early:?}");
    assert!(!unit.calls.all().iter().any(|c| c.contains("/events")));

    rd.metadata.deletion_timestamp = Some(deleted_ago(11));
    let late = finalize::cleanup(Arc::new(rd), ctx.clone()).await;
    assert!(late.is_ok(), "held the pool after 11 minutes: {late:?}");
    assert!(
        unit.calls
            .all()
            .iter()
            .any(|c| c.starts_with("POST") && c.contains("/events")),
        "no CleanupIncomplete event: {:?}",
        unit.calls.all()
    );
}

#[tokio::test]
async fn a_job_just_created_counts_as_owned_before_the_watch_shows_it() {
    let unit = Unit::new(|_, _| None);
    let rd = unit.pool();
    let client = unit.client();
    let scope = scope();
    let executor = PlanExecutor::new(&unit.ctx, &rd, &client, &scope);
    let problems = executor.carry_out(&plan_for_one_job(&rd)).await;
    assert!(problems.without_credentials.is_none(), "{problems:?}");
    // The caches are empty (no watch runs here), as they are for a moment after a create.
    assert!(unit.ctx.stores.jobs.state().is_empty());
    let owned = super::observe::owned_jobs(&unit.ctx, &rd).owned;
    let names: Vec<&str> = owned.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        owned[0].secret_exists,
        "the Secret created with it counts too"
    );
    // So a second reconcile creates nothing again: no Job, no Secret, no registration.
    let again = plan_with_owned(&rd, &owned);
    assert!(again.create_jobs.is_empty(), "{:?}", again.create_jobs);
    assert!(
        again.create_secrets.is_empty(),
        "{:?}",
        again.create_secrets
    );
}

#[tokio::test]
async fn leadership_lost_between_two_cache_writes_stops_every_later_write() {
    let leader: Arc<Mutex<Option<watch::Sender<bool>>>> = Arc::default();
    let lose = leader.clone();
    let unit = Unit::new(move |method, path| {
        // The claim is the cache's second write (after its Secret): the Lease goes while it
        // is in flight, and the apiserver accepts it.
        if method == "PATCH" && path.contains("/persistentvolumeclaims/") {
            if let Some(sender) = lose.lock().unwrap().as_ref() {
                sender.send_replace(false);
            }
            let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "pool-cache", "namespace": "ci"}});
            return Some((200, claim));
        }
        None
    });
    *leader.lock().unwrap() = Some(unit.leader.clone());
    let rd = unit.pool();
    let pool = scheduler::Pool::from_resource(&rd).unwrap();
    super::cache::reconcile_cache(&unit.ctx, &rd, &pool).await;

    let calls = unit.calls.all();
    let claim = calls
        .iter()
        .position(|c| c.starts_with("PATCH") && c.contains("/persistentvolumeclaims/"))
        .unwrap_or_else(|| panic!("the claim was never applied: {calls:?}"));
    assert!(
        calls[..claim]
            .iter()
            .any(|c| c.starts_with("POST") && c.contains("/secrets")),
        "the cache's Secret was not the first write: {calls:?}"
    );
    let later_writes: Vec<&String> = calls[claim + 1..]
        .iter()
        .filter(|c| !c.starts_with("GET"))
        .collect();
    assert!(
        later_writes.is_empty(),
        "writes after leadership was lost: {later_writes:?}"
    );
}
