//! What a hook receives when jobs change, and the test controls over its deliveries.

use std::time::Duration;

use bytes::Bytes;
use forgejo_stand_in::{StandIn, StandInJob, WebhookFault};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use runner_protocol::{
    DeclareRequest, FetchTaskRequest, FetchTaskResponse, Message, RUNNER_SERVICE, TaskResult,
    TaskState, UpdateTaskRequest,
};
use serde_json::json;

use crate::webhooks::receiver::{Received, Receiver};
use crate::{SECRET, TOKEN, api, create_hook, hmac_hex, is_uuid_v4, settled, start};

/// The event, action and job status of a received delivery.
fn summary(received: &Received) -> (String, String, String) {
    let body = received.json();
    (
        received.header("x-forgejo-event"),
        body["action"].as_str().unwrap().to_owned(),
        body["job"]["status"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_org_hook_hears_a_waiting_job_signed_with_its_secret() {
    let forgejo = start();
    let mut receiver = Receiver::start().await;
    let hook = create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &receiver.url(),
        &["Workflow_Job_Waiting"],
    )
    .await;
    let job = forgejo.add_job(StandInJob::new("ACME/app", "build", &["docker"]));

    let received = receiver.next().await;
    assert_eq!(received.path, "/hook");
    assert_eq!(received.header("content-type"), "application/json");
    for prefix in ["x-forgejo", "x-gitea"] {
        assert_eq!(
            received.header(&format!("{prefix}-event")),
            "workflow_job_waiting"
        );
        assert_eq!(
            received.header(&format!("{prefix}-event-type")),
            "workflow_job_waiting"
        );
    }
    let delivery = received.header("x-forgejo-delivery");
    assert!(is_uuid_v4(&delivery), "{delivery}");
    assert_eq!(received.header("x-gitea-delivery"), delivery);
    let signature = hmac_hex(SECRET, &received.body);
    assert_eq!(received.header("x-forgejo-signature"), signature);
    assert_eq!(received.header("x-gitea-signature"), signature);
    assert_eq!(
        received.header("x-hub-signature-256"),
        format!("sha256={signature}")
    );

    let body = received.json();
    assert_eq!(body["action"], "new_job_attempt");
    assert_eq!(body["job"]["id"], job.id);
    assert_eq!(body["job"]["status"], "waiting");
    assert_eq!(body["job"]["runs_on"], json!(["docker"]));
    assert_eq!(body["job"]["handle"], json!(job.handle));
    assert_eq!(body["job"]["attempt"], 1);
    assert_eq!(body["run"]["id"], json!(job.run_id));
    assert_eq!(body["run"]["title"], "build");
    assert_eq!(body["run"]["status"], "waiting");
    assert_eq!(body["repository"]["id"], job.repo_id);
    assert_eq!(body["repository"]["name"], "app");
    assert_eq!(body["repository"]["full_name"], "ACME/app");
    assert_eq!(body["repository"]["owner"]["id"], job.owner_id);
    assert_eq!(body["repository"]["owner"]["login"], "ACME");

    let deliveries = settled(&forgejo, 1).await;
    assert_eq!(deliveries.len(), 1);
    let record = &deliveries[0];
    assert_eq!(record.hook_id, hook);
    assert_eq!(record.event, "workflow_job_waiting");
    assert_eq!(record.action, "new_job_attempt");
    assert_eq!(record.job_id, job.id);
    assert_eq!(record.delivery, delivery);
    assert_eq!((record.status, record.error.as_deref()), (Some(200), None));
}

#[tokio::test]
async fn a_hook_hears_only_its_scope_and_the_events_it_chose() {
    let forgejo = start();
    let mut org = Receiver::start().await;
    let mut repo = Receiver::start().await;
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &org.url(),
        &["workflow_job_waiting"],
    )
    .await;
    create_hook(
        &forgejo,
        "/repos/acme/app/hooks",
        &repo.url(),
        &["workflow_job_running", "workflow_job_success"],
    )
    .await;

    forgejo.add_job(StandInJob::new("other/app", "elsewhere", &["docker"]));
    let lib = forgejo.add_job(StandInJob::new("acme/lib", "lib", &["docker"]));
    let app = forgejo.add_job(StandInJob::new("acme/app", "app", &["docker"]));
    assert_eq!(org.next().await.json()["job"]["id"], lib.id);
    assert_eq!(org.next().await.json()["job"]["id"], app.id);

    let runner = forgejo.add_runner(&forgejo::Scope::Organization("acme".into()), "r", true);
    assert!(forgejo.take_job(lib.id, runner.id));
    assert!(forgejo.take_job(app.id, runner.id));
    let running = repo.next().await;
    assert_eq!(
        summary(&running),
        (
            "workflow_job_running".into(),
            "job_status_changed".into(),
            "running".into()
        )
    );
    assert_eq!(running.json()["job"]["id"], app.id);
    assert_ne!(running.json()["job"]["task_id"], 0);
    assert!(forgejo.finish_job(app.id, "success"));
    assert_eq!(
        summary(&repo.next().await),
        (
            "workflow_job_success".into(),
            "job_completed".into(),
            "success".into()
        )
    );
    org.nothing_within(Duration::from_millis(200)).await;
    repo.nothing_within(Duration::from_millis(200)).await;
    assert_eq!(settled(&forgejo, 4).await.len(), 4);
}

#[tokio::test]
async fn cancelling_a_job_delivers_workflow_job_cancelled_as_completed() {
    let forgejo = start();
    let mut receiver = Receiver::start().await;
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &receiver.url(),
        &["workflow_job_waiting", "workflow_job_cancelled"],
    )
    .await;
    let job = forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    assert_eq!(summary(&receiver.next().await).0, "workflow_job_waiting");
    assert!(forgejo.cancel_job(job.id));
    let cancelled = receiver.next().await;
    assert_eq!(
        summary(&cancelled),
        (
            "workflow_job_cancelled".into(),
            "job_completed".into(),
            "cancelled".into()
        )
    );
    assert_eq!(cancelled.json()["run"]["status"], "cancelled");
    // No change, no delivery.
    assert!(forgejo.cancel_job(job.id));
    receiver.nothing_within(Duration::from_millis(200)).await;
    // A new attempt waits again.
    forgejo.rerun_job(job.id).unwrap();
    let rerun = receiver.next().await;
    assert_eq!(summary(&rerun).1, "new_job_attempt");
    assert_eq!(rerun.json()["job"]["attempt"], 2);
}

#[tokio::test]
async fn a_dropped_delivery_is_recorded_but_not_sent() {
    let forgejo = start();
    let mut receiver = Receiver::start().await;
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &receiver.url(),
        &["workflow_job_waiting"],
    )
    .await;
    forgejo.set_webhook_fault(WebhookFault::Drop);
    let dropped = forgejo.add_job(StandInJob::new("acme/app", "dropped", &["docker"]));
    receiver.nothing_within(Duration::from_millis(300)).await;
    forgejo.set_webhook_fault(WebhookFault::None);
    let sent = forgejo.add_job(StandInJob::new("acme/app", "sent", &["docker"]));
    assert_eq!(receiver.next().await.json()["job"]["id"], sent.id);

    let deliveries = settled(&forgejo, 2).await;
    assert_eq!(deliveries[0].job_id, dropped.id);
    assert_eq!(deliveries[0].status, None);
    assert!(deliveries[0].error.as_deref().unwrap().contains("Drop"));
    assert_eq!(
        (deliveries[1].job_id, deliveries[1].status),
        (sent.id, Some(200))
    );
}

#[tokio::test]
async fn a_duplicated_delivery_arrives_twice_with_one_delivery_id() {
    let forgejo = start();
    let mut receiver = Receiver::start().await;
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &receiver.url(),
        &["workflow_job_waiting"],
    )
    .await;
    forgejo.set_webhook_fault(WebhookFault::Duplicate);
    forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    let first = receiver.next().await;
    let second = receiver.next().await;
    assert_eq!(
        first.header("x-forgejo-delivery"),
        second.header("x-forgejo-delivery")
    );
    assert_eq!(first.body, second.body);
    let deliveries = settled(&forgejo, 2).await;
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].delivery, deliveries[1].delivery);
}

#[tokio::test]
async fn a_delayed_delivery_waits_and_a_redelivery_replays_the_same_bytes() {
    let forgejo = start();
    assert_eq!(forgejo.redeliver_last(), None);
    let mut receiver = Receiver::start().await;
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &receiver.url(),
        &["workflow_job_waiting"],
    )
    .await;
    forgejo.set_webhook_fault(WebhookFault::Delay(Duration::from_millis(400)));
    let started = std::time::Instant::now();
    forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    let original = receiver.next().await;
    assert!(started.elapsed() >= Duration::from_millis(400));

    let replayed_id = forgejo.redeliver_last().unwrap();
    let replay = receiver.next().await;
    assert_eq!(replayed_id, original.header("x-forgejo-delivery"));
    assert_eq!(replay.body, original.body);
    assert_eq!(replay.headers, original.headers);
    assert_eq!(settled(&forgejo, 2).await[1].delivery, replayed_id);
}

#[tokio::test]
async fn an_unreachable_receiver_is_recorded_as_an_error() {
    let forgejo = start();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &url,
        &["workflow_job_waiting"],
    )
    .await;
    forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    let deliveries = settled(&forgejo, 1).await;
    assert_eq!(deliveries[0].status, None);
    assert!(deliveries[0].error.is_some());
}

/// One Connect call to the runner service as runner `uuid` with `token`; the answer bytes.
async fn runner_call(
    forgejo: &StandIn,
    method: &str,
    (uuid, token): (&str, &str),
    request: &impl Message,
) -> Bytes {
    let request = http::Request::post(format!("{}{RUNNER_SERVICE}{method}", forgejo.url()))
        .header("content-type", "application/proto")
        .header("connect-protocol-version", "1")
        .header("x-runner-uuid", uuid)
        .header("x-runner-token", token)
        .body(Full::new(Bytes::from(request.encode_to_vec())))
        .unwrap();
    let client = HttpClient::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{method}");
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_runner_taking_and_finishing_a_job_delivers_running_then_failure() {
    let forgejo = start();
    let mut receiver = Receiver::start().await;
    create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &receiver.url(),
        &["workflow_job_running", "workflow_job_failure"],
    )
    .await;
    let job = forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    let (status, runner) = api(
        &forgejo,
        "POST",
        "/orgs/acme/actions/runners",
        TOKEN,
        Some(json!({ "name": "r1", "ephemeral": true })),
    )
    .await;
    assert_eq!(status, 201, "{runner}");
    let creds = (
        runner["uuid"].as_str().unwrap(),
        runner["token"].as_str().unwrap(),
    );
    let declare = DeclareRequest {
        version: "v12.8.2".into(),
        labels: vec!["docker".into()],
    };
    runner_call(&forgejo, "Declare", creds, &declare).await;
    let fetched = runner_call(&forgejo, "FetchTask", creds, &FetchTaskRequest::default()).await;
    let task = FetchTaskResponse::decode(fetched).unwrap().task.unwrap();

    let running = receiver.next().await;
    assert_eq!(
        summary(&running),
        (
            "workflow_job_running".into(),
            "job_status_changed".into(),
            "running".into()
        )
    );
    assert_eq!(running.json()["job"]["id"], job.id);
    assert_eq!(running.json()["job"]["task_id"], task.id);

    let update = UpdateTaskRequest {
        state: Some(TaskState {
            id: task.id,
            result: TaskResult::Failure as i32,
            ..TaskState::default()
        }),
        outputs: Default::default(),
    };
    runner_call(&forgejo, "UpdateTask", creds, &update).await;
    assert_eq!(
        summary(&receiver.next().await),
        (
            "workflow_job_failure".into(),
            "job_completed".into(),
            "failure".into()
        )
    );
}
