//! The hooks API: answers, scopes, token checks and Forgejo's 422 messages; no secret shown.

use std::time::Duration;

use forgejo_stand_in::StandInJob;
use serde_json::json;

use crate::webhooks::receiver::Receiver;
use crate::{READ_ONLY, SECRET, TOKEN, api, create_hook, hook_body, start};

#[tokio::test]
async fn the_hooks_api_lists_gets_and_deletes_hooks_of_their_scope() {
    let forgejo = start();
    let mut receiver = Receiver::start().await;
    let url = receiver.url();
    let org = create_hook(
        &forgejo,
        "/orgs/acme/hooks",
        &url,
        &["workflow_job_waiting"],
    )
    .await;
    let repo = create_hook(&forgejo, "/repos/acme/app/hooks", &url, &["push"]).await;

    let (status, listed) = api(&forgejo, "GET", "/orgs/acme/hooks", READ_ONLY, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let hook = &listed[0];
    assert_eq!(hook["id"], org);
    assert_eq!(hook["type"], "forgejo");
    assert_eq!(hook["active"], true);
    assert_eq!(hook["events"], json!(["workflow_job_waiting"]));
    assert_eq!(
        hook["config"],
        json!({ "url": url, "content_type": "json" })
    );
    assert!(hook["created_at"].as_str().unwrap().ends_with('Z'));
    let (_, repo_hooks) = api(&forgejo, "GET", "/repos/acme/app/hooks", TOKEN, None).await;
    assert_eq!(repo_hooks[0]["id"], repo);
    let path = format!("/orgs/acme/hooks/{org}");
    assert_eq!(api(&forgejo, "GET", &path, TOKEN, None).await.1["id"], org);
    // A hook is found only under its own scope.
    let elsewhere = format!("/orgs/other/hooks/{org}");
    assert_eq!(
        api(&forgejo, "DELETE", &elsewhere, TOKEN, None).await.0,
        404
    );

    assert_eq!(api(&forgejo, "DELETE", &path, TOKEN, None).await.0, 204);
    assert_eq!(api(&forgejo, "DELETE", &path, TOKEN, None).await.0, 404);
    assert_eq!(forgejo.hooks().len(), 1);
    forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    receiver.nothing_within(Duration::from_millis(200)).await;
    assert!(forgejo.deliveries().is_empty());
}

#[tokio::test]
async fn a_read_only_token_cannot_create_or_delete_hooks() {
    let forgejo = start();
    let body = hook_body("http://127.0.0.1:9/hook", &["workflow_job_waiting"]);
    let (status, error) = api(&forgejo, "POST", "/orgs/acme/hooks", READ_ONLY, Some(body)).await;
    assert_eq!(status, 403);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("write:organization"),
        "{error}"
    );
    let id = create_hook(
        &forgejo,
        "/repos/acme/app/hooks",
        "http://127.0.0.1:9/",
        &[],
    )
    .await;
    let path = format!("/repos/acme/app/hooks/{id}");
    let (status, error) = api(&forgejo, "DELETE", &path, READ_ONLY, None).await;
    assert_eq!(status, 403);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("write:repository")
    );
    assert_eq!(forgejo.hooks().len(), 1);
    assert_eq!(forgejo.hooks()[0].events, ["push"]);
}

#[tokio::test]
async fn a_hook_without_a_url_or_content_type_is_refused_with_422() {
    let forgejo = start();
    let cases = [
        (
            json!({"type": "forgejo", "config": {"content_type": "json"}}),
            "Missing config option: url",
        ),
        (
            json!({"type": "forgejo", "config": {"url": "http://127.0.0.1:9/"}}),
            "Missing config option: content_type",
        ),
        (
            json!({"type": "forgejo", "config": {"url": "http://127.0.0.1:9/", "content_type": "xml"}}),
            "Invalid content type",
        ),
        (
            json!({"type": "forgejo", "config": {"url": "not a url", "content_type": "json"}}),
            "Invalid url",
        ),
        (
            json!({"type": "carrier-pigeon", "config": {"url": "http://127.0.0.1:9/", "content_type": "json"}}),
            "Invalid hook type: carrier-pigeon",
        ),
    ];
    for (body, message) in cases {
        let (status, error) = api(&forgejo, "POST", "/orgs/acme/hooks", TOKEN, Some(body)).await;
        assert_eq!((status, error["message"].as_str()), (422, Some(message)));
    }
    assert!(forgejo.hooks().is_empty());
}

#[tokio::test]
async fn the_secret_never_appears_in_answers_or_records() {
    let forgejo = start();
    let receiver = Receiver::start().await;
    let body = hook_body(&receiver.url(), &["workflow_job_waiting"]);
    let (status, created) = api(&forgejo, "POST", "/orgs/acme/hooks", TOKEN, Some(body)).await;
    assert_eq!(status, 201);
    let (_, listed) = api(&forgejo, "GET", "/orgs/acme/hooks", TOKEN, None).await;
    let path = format!("/orgs/acme/hooks/{}", created["id"]);
    let (_, got) = api(&forgejo, "GET", &path, TOKEN, None).await;
    for answer in [&created, &listed, &got] {
        assert!(!answer.to_string().contains(SECRET), "{answer}");
    }
    assert!(!format!("{:?}", forgejo.hooks()).contains(SECRET));
    let recorded = forgejo.requests();
    assert!(
        recorded
            .iter()
            .all(|r| { r.body.as_deref().is_none_or(|body| !body.contains(SECRET)) })
    );
    let post = recorded.iter().find(|r| r.method == "POST").unwrap();
    assert!(post.body.as_deref().unwrap().contains("[redacted]"));
}
