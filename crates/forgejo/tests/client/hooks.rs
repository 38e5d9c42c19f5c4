//! Webhooks: create, list and delete on an organization and a repository; the scope a 403
//! asks for; the hook's secret kept out of every `Debug` and error.

use std::error::Error as _;
use std::sync::{Arc, Mutex};

use forgejo::{ClientOptions, Error, NewHook, Scope};
use forgejo_stand_in::{Fault, StandInConfig, Times};

use crate::{TOKEN, V15, options, paths, start, start_with, v};

/// The hook secret every test uses; like the token, it must never show up in an error.
const SECRET: &str = "h00k-s1gning-5ecret-fedcba9876543210";

fn acme() -> Scope {
    Scope::Organization("acme".into())
}

fn app() -> Scope {
    Scope::repository("acme/app").unwrap()
}

fn workflow_job_hook(url: &str) -> NewHook {
    NewHook {
        url: url.into(),
        secret: SECRET.into(),
        events: v(&["workflow_job_waiting", "workflow_job_success"]),
    }
}

/// Every text an error can produce: Display, Debug, alternate Debug and the source chain.
fn all_text(err: &Error) -> String {
    let mut text = format!("{err}\n{err:?}\n{err:#?}\n");
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    text
}

/// Creates, lists and deletes a hook of `scope` at `path`; `other` must not see it.
async fn create_list_delete(scope: Scope, other: Scope, path: &str) {
    let endpoints = Arc::new(Mutex::new(Vec::new()));
    let seen = endpoints.clone();
    let observed = ClientOptions {
        observer: Some(Arc::new(move |outcome| {
            seen.lock().unwrap().push(outcome.endpoint);
        })),
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), observed);

    let created = client
        .create_hook(&scope, &workflow_job_hook("https://ops.example.com/hook"))
        .await
        .unwrap();

    assert!(created.id > 0);
    assert_eq!(
        (created.kind.as_str(), created.content_type.as_str()),
        ("forgejo", "json")
    );
    assert_eq!(created.url, "https://ops.example.com/hook");
    assert_eq!(
        created.events,
        ["workflow_job_waiting", "workflow_job_success"]
    );
    assert!(created.active);
    let request = &forgejo.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", path)
    );
    let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["type"], "forgejo");
    assert_eq!(body["active"], true);
    assert_eq!(
        body["events"],
        serde_json::json!(["workflow_job_waiting", "workflow_job_success"])
    );
    assert_eq!(body["config"]["url"], "https://ops.example.com/hook");
    assert_eq!(body["config"]["content_type"], "json");
    assert!(
        body["config"]["secret"].is_string(),
        "the secret was sent (the stand-in records it redacted)"
    );
    let stored = forgejo.hooks();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].id, &stored[0].scope), (created.id, &scope));

    let listed = client.list_hooks(&scope).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&created));
    let list_request = forgejo.requests().last().cloned().unwrap();
    assert_eq!(list_request.path, path);
    assert_eq!(list_request.query.as_deref(), Some("page=1&limit=50"));
    assert!(client.list_hooks(&other).await.unwrap().is_empty());

    client.delete_hook(&scope, created.id).await.unwrap();
    client.delete_hook(&scope, created.id).await.unwrap();

    assert!(forgejo.hooks().is_empty());
    assert!(client.list_hooks(&scope).await.unwrap().is_empty());
    let deletes: Vec<String> = forgejo
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    let hook_path = format!("{path}/{}", created.id);
    assert_eq!(
        deletes,
        [hook_path.clone(), hook_path],
        "the second is a 404, already gone, not retried"
    );
    assert_eq!(
        *endpoints.lock().unwrap(),
        [
            "create_hook",
            "list_hooks",
            "list_hooks",
            "delete_hook",
            "delete_hook",
            "list_hooks"
        ]
    );
}

#[tokio::test]
async fn an_organization_hook_is_created_listed_and_deleted() {
    create_list_delete(acme(), app(), "/api/v1/orgs/acme/hooks").await;
}

#[tokio::test]
async fn a_repository_hook_is_created_listed_and_deleted() {
    create_list_delete(app(), acme(), "/api/v1/repos/acme/app/hooks").await;
}

#[tokio::test]
async fn a_scope_cannot_delete_another_scopes_hook() {
    let (forgejo, client) = start(V15);
    let theirs = client
        .create_hook(
            &Scope::Organization("other".into()),
            &workflow_job_hook("https://ops.example.com/hook"),
        )
        .await
        .unwrap();

    // Forgejo answers 404 (not a hook of this scope): read as gone, the hook stays.
    client.delete_hook(&acme(), theirs.id).await.unwrap();

    assert_eq!(forgejo.hooks().len(), 1);
}

#[tokio::test]
async fn a_read_only_token_gets_the_scope_error_naming_the_scope() {
    let config = StandInConfig {
        read_only_tokens: vec![TOKEN.into()],
        ..StandInConfig::default()
    };
    let (forgejo, client) = start_with(config, options());

    assert!(
        client.list_hooks(&acme()).await.unwrap().is_empty(),
        "reading is allowed"
    );
    for (scope, needed, path) in [
        (acme(), "write:organization", "/api/v1/orgs/acme/hooks"),
        (app(), "write:repository", "/api/v1/repos/acme/app/hooks"),
    ] {
        forgejo.clear_requests();
        let err = client
            .create_hook(&scope, &workflow_job_hook("https://ops.example.com/hook"))
            .await
            .unwrap_err();

        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        assert_eq!((err.reason(), err.status()), ("Forbidden", Some(403)));
        let text = err.to_string();
        assert!(text.contains(needed), "{text}");
        assert!(text.contains(path), "{text}");
        assert!(text.contains("DISABLE_WEBHOOKS"), "{text}");
        assert!(!all_text(&err).contains(SECRET), "{err:?}");
        assert_eq!(paths(&forgejo), [path], "a 403 is not retried");

        let err = client.delete_hook(&scope, 1).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        assert!(err.to_string().contains(needed), "{err}");
    }
    assert!(forgejo.hooks().is_empty());
}

#[tokio::test]
async fn the_hook_secret_never_appears_in_debug_or_any_error() {
    let hook = workflow_job_hook("https://ops.example.com/hook");
    for shown in [format!("{hook:?}"), format!("{hook:#?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
    }

    let (forgejo, client) = start(V15);
    let echo = format!(r#"{{"message":"hook secret {SECRET} refused","url":"x"}}"#);
    let mut errors = Vec::new();
    // Answers that quote the secret in every way an error could pick it up.
    for fault in [
        Fault::Body(422, echo.clone()),
        Fault::Body(403, echo),
        Fault::Body(500, format!("<html>secret={SECRET}</html>")),
        Fault::Body(201, format!("not json {SECRET}")),
        Fault::Body(201, format!(r#"{{"id":"{SECRET}"}}"#)),
        Fault::Body(201, format!(r#"{{"id":0,"config":{{"url":"{SECRET}"}}}}"#)),
    ] {
        forgejo.inject_fault("/api/v1/orgs/acme/hooks", fault, Times::Once);
        errors.push(client.create_hook(&acme(), &hook).await.unwrap_err());
    }
    let refused = [
        NewHook {
            url: format!("ftp://ops.example.com/{SECRET}"),
            ..hook.clone()
        },
        NewHook {
            events: Vec::new(),
            ..hook.clone()
        },
    ];
    for hook in &refused {
        errors.push(client.create_hook(&acme(), hook).await.unwrap_err());
    }

    assert!(
        matches!(errors[0], Error::UnexpectedStatus { status: 422, .. }),
        "{:?}",
        errors[0]
    );
    assert!(matches!(errors[1], Error::Forbidden { .. }));
    assert!(matches!(errors[2], Error::Server { status: 500, .. }));
    for err in &errors[3..6] {
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");
    }
    for err in &errors[6..] {
        assert!(matches!(err, Error::InvalidHook { .. }), "{err:?}");
    }
    for err in &errors {
        let text = all_text(err);
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    assert_eq!(
        forgejo.requests().len(),
        6,
        "one per answer: a POST that may have arrived is not retried, a refused hook is not sent"
    );
    assert!(
        forgejo
            .requests()
            .iter()
            .filter_map(|r| r.body.as_deref())
            .all(|body| !body.contains(SECRET)),
        "the stand-in records the secret redacted"
    );
}

#[tokio::test]
async fn a_hook_without_a_url_is_refused_before_sending() {
    let (forgejo, client) = start(V15);
    let no_url = NewHook {
        url: String::new(),
        ..workflow_job_hook("")
    };

    let err = client.create_hook(&acme(), &no_url).await.unwrap_err();

    assert!(matches!(err, Error::InvalidHook { .. }), "{err:?}");
    assert!(err.to_string().contains("http(s) URL"), "{err}");
    assert!(
        forgejo.requests().is_empty(),
        "Forgejo would answer 422, which errors cannot explain"
    );
}
