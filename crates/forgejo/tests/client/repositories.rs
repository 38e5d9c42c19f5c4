//! A job's repository from its `repo_id` (`GET /repositories/{id}`): names of repositories of
//! two owners, on Forgejo 11 as on 15, used to read the repository's tasks; the errors that
//! name the id and the token scope; one request per call; a recorded answer and odd ones.

use std::sync::{Arc, Mutex};

use forgejo::{Client, ClientOptions, Error, RepositoryName, RequestOutcome};
use forgejo_stand_in::{Fault, StandIn, StandInConfig, StandInJob, Times};

use crate::{TOKEN, V11, V15, options, paths, start, start_with};

/// A stand-in behaving as `version`, and a client whose observer records every attempt.
fn observed(version: &str) -> (StandIn, Client, Arc<Mutex<Vec<RequestOutcome>>>) {
    let seen: Arc<Mutex<Vec<RequestOutcome>>> = Arc::default();
    let sink = seen.clone();
    let options = ClientOptions {
        observer: Some(Arc::new(move |outcome| sink.lock().unwrap().push(outcome))),
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(version, TOKEN), options);
    (forgejo, client, seen)
}

/// (endpoint, outcome, attempt) of each attempt the observer saw.
fn outcomes(seen: &Mutex<Vec<RequestOutcome>>) -> Vec<(&'static str, &'static str, u32)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|o| (o.endpoint, o.outcome, o.attempt))
        .collect()
}

fn name(id: i64, owner: &str, name: &str) -> RepositoryName {
    RepositoryName {
        id,
        owner: owner.into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn names_come_from_the_ids_of_repositories_of_two_owners() {
    for version in [V11, V15] {
        let (forgejo, client, seen) = observed(version);
        let app = forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
        let web = forgejo.add_job(StandInJob::new("umbrella/web", "lint", &["docker"]));
        assert_ne!(app.owner_id, web.owner_id);

        let found_web = client.repository_by_id(web.repo_id).await.unwrap();
        let found_app = client.repository_by_id(app.repo_id).await.unwrap();

        assert_eq!(found_web, name(web.repo_id, "umbrella", "web"), "{version}");
        assert_eq!(found_app, name(app.repo_id, "acme", "app"), "{version}");
        assert_eq!(found_app.full_name(), "acme/app");
        assert_eq!(
            paths(&forgejo),
            [
                format!("/api/v1/repositories/{}", web.repo_id),
                format!("/api/v1/repositories/{}", app.repo_id),
            ]
        );
        assert_eq!(
            outcomes(&seen),
            [("get_repository", "ok", 1), ("get_repository", "ok", 1)]
        );

        // What the name is for: the finished job's result, from its repository's tasks.
        assert!(forgejo.take_job(app.id, 99));
        assert!(forgejo.finish_job(app.id, "failure"));
        let task_id = forgejo.job(app.id).unwrap().task_id;
        let found = client
            .finished_tasks(&found_app.owner, &found_app.name, &[task_id])
            .await
            .unwrap();
        assert_eq!(found.tasks.len(), 1, "{version}");
        assert_eq!(found.tasks[0].status, "failure");
    }
}

#[tokio::test]
async fn each_call_sends_one_request_counted_once() {
    let (forgejo, client, seen) = observed(V15);
    let app = forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));

    for _ in 0..2 {
        let found = client.repository_by_id(app.repo_id).await.unwrap();
        assert_eq!(found, name(app.repo_id, "acme", "app"));
    }
    let _ = client.repository_by_id(999).await.unwrap_err();

    assert_eq!(
        forgejo.requests().len(),
        3,
        "no cache, and a 404 is not retried"
    );
    assert_eq!(
        outcomes(&seen),
        [
            ("get_repository", "ok", 1),
            ("get_repository", "ok", 1),
            ("get_repository", "NotFound", 1),
        ]
    );
}

#[tokio::test]
async fn an_unknown_id_or_a_missing_scope_names_the_id_and_read_repository() {
    let config = StandInConfig {
        owners: Some(vec!["acme".into()]),
        read_only_tokens: vec![TOKEN.into()],
        ..StandInConfig::with_token(V15, "another-token")
    };
    let (forgejo, client) = start_with(config, options());
    let app = forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    let gone = forgejo.add_job(StandInJob::new("ghost/app", "build", &["docker"]));
    let found = client.repository_by_id(app.repo_id).await.unwrap();
    assert_eq!(found.owner, "acme", "a read-only token may read it");

    let missing = client.repository_by_id(4242).await.unwrap_err();
    let unseen = client.repository_by_id(gone.repo_id).await.unwrap_err();
    let path = format!("/api/v1/repositories/{}", app.repo_id);
    forgejo.inject_fault(&path, Fault::Status(403), Times::Once);
    let denied = client.repository_by_id(app.repo_id).await.unwrap_err();

    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
    assert!(matches!(unseen, Error::NotFound { .. }), "{unseen:?}");
    assert!(matches!(denied, Error::Forbidden { .. }), "{denied:?}");
    for (err, path) in [
        (&missing, "/api/v1/repositories/4242".to_owned()),
        (&unseen, format!("/api/v1/repositories/{}", gone.repo_id)),
        (&denied, path),
    ] {
        let text = err.to_string();
        assert!(text.contains(&path), "{text}");
        assert!(text.contains("read:repository"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(
            !text.contains("couldn't be found"),
            "no server text: {text}"
        );
    }
    assert!(
        missing.to_string().contains("private repository"),
        "{missing}"
    );
    assert_eq!(forgejo.requests().len(), 4, "none is retried");
}

#[tokio::test]
async fn a_recorded_answer_is_read_and_an_odd_one_is_refused() {
    let (forgejo, client) = start(V15);
    let path = "/api/v1/repositories/77";
    let recorded = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/repository_v15.json"
    ));
    forgejo.inject_fault(path, Fault::Body(200, recorded.into()), Times::Once);
    let found = client.repository_by_id(77).await.unwrap();
    assert_eq!(found, name(77, "acme", "app"));

    let full_name_only = r#"{"id":77,"full_name":"acme/app","owner":null}"#;
    forgejo.inject_fault(path, Fault::Body(200, full_name_only.into()), Times::Once);
    assert_eq!(
        client.repository_by_id(77).await.unwrap().full_name(),
        "acme/app"
    );

    let odd = [
        (
            r#"{"id":78,"name":"app","owner":{"login":"acme"}}"#,
            "repository 78, not 77",
        ),
        (
            r#"{"id":77,"name":"","full_name":"","owner":{"login":"acme"}}"#,
            "full_name",
        ),
        (
            r#"{"id":77,"name":"../admin","owner":{"login":"acme"}}"#,
            "full_name",
        ),
        ("[]", "JSON"),
    ];
    for (body, detail) in odd {
        forgejo.inject_fault(path, Fault::Body(200, body.into()), Times::Once);
        let err = client.repository_by_id(77).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidResponse { .. }),
            "{body}: {err:?}"
        );
        assert!(err.to_string().contains(detail), "{body}: {err}");
        assert!(!err.to_string().contains("admin"), "no server text: {err}");
    }
}
