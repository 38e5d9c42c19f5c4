//! Hand-written JSON in Forgejo's shapes (see `tests/fixtures/README.md`), parsed directly and
//! replayed over HTTP through the client.

use forgejo::{ActionRunJob, Error, Runner, Scope};
use forgejo_stand_in::{Fault, Times};

use crate::{V15, start, v};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
    };
}

fn acme() -> Scope {
    Scope::Organization("acme".into())
}

#[test]
fn job_fixtures_parse_into_typed_jobs() {
    let v14: Vec<ActionRunJob> = serde_json::from_str(fixture!("jobs_v14.json")).unwrap();
    assert_eq!(v14.len(), 2);
    assert_eq!(v14[0].id, 4812);
    assert_eq!((v14[0].repo_id, v14[0].owner_id), (77, 12));
    assert_eq!(v14[0].name, "test (ubuntu)");
    assert_eq!(v14[0].needs, ["lint"]);
    assert_eq!(v14[0].runs_on, ["docker", "amd64"]);
    assert!(v14[0].is_waiting());
    assert_eq!((v14[0].attempt, v14[0].handle.as_deref()), (None, None));
    assert!(v14[1].needs.is_empty());
    assert_eq!((v14[1].task_id, v14[1].status.as_str()), (9133, "running"));

    let v15: Vec<ActionRunJob> = serde_json::from_str(fixture!("jobs_v15.json")).unwrap();
    assert_eq!(v15[0].attempt, Some(2));
    assert_eq!(
        v15[0].handle.as_deref(),
        Some("6f1c2a4e-93d0-4b7e-a1f2-0c5d8e9b7a31")
    );
    assert_eq!(v15[1].handle, None, "empty handle");
    assert_eq!(v15[1].needs, ["build", "test"]);

    let newer: Vec<ActionRunJob> = serde_json::from_str(fixture!("jobs_newer.json")).unwrap();
    assert_eq!(newer[0].run_id, Some(904));
    assert!(
        newer[0]
            .html_url
            .as_deref()
            .unwrap()
            .ends_with("/attempt/1")
    );

    let none: Option<Vec<ActionRunJob>> = serde_json::from_str(fixture!("jobs_none.json")).unwrap();
    assert!(none.is_none());
}

#[test]
fn runner_fixtures_parse_into_typed_runners() {
    let runners: Vec<Runner> = serde_json::from_str(fixture!("runners_v15.json")).unwrap();
    assert_eq!(runners[0].id, 130791);
    assert_eq!(runners[0].uuid, "3d5e7f90-1a2b-4c3d-8e4f-5a6b7c8d9e0f");
    assert!(runners[0].ephemeral);
    assert!(runners[0].labels.is_empty());
    assert_eq!(runners[0].owner_id, Some(12));
    assert_eq!(runners[0].repo_id, Some(0));
    assert_eq!(runners[1].labels, ["debian", "gpu"]);
    assert_eq!(runners[1].status, "idle");
    assert_eq!(runners[1].version.as_deref(), Some("12.8.2"));
    assert_eq!(runners[1].description, "");
}

#[tokio::test]
async fn replayed_fixtures_parse_through_the_client() {
    let (forgejo, client) = start(V15);
    let jobs_path = "/api/v1/orgs/acme/actions/runners/jobs";
    let runners_path = "/api/v1/orgs/acme/actions/runners";
    let labels = v(&["docker"]);

    forgejo.inject_fault(
        "/api/v1/version",
        Fault::Body(200, fixture!("version.json").into()),
        Times::Once,
    );
    let version = client.version().await.unwrap();
    assert_eq!((version.major, version.minor, version.patch), (15, 0, 3));
    assert!(version.supports_ephemeral_runners());

    for (file, count) in [
        (fixture!("jobs_v14.json"), 2),
        (fixture!("jobs_v15.json"), 2),
        (fixture!("jobs_newer.json"), 1),
        (fixture!("jobs_none.json"), 0),
    ] {
        forgejo.inject_fault(jobs_path, Fault::Body(200, file.into()), Times::Once);
        assert_eq!(
            client
                .list_jobs(&acme(), Some(&labels))
                .await
                .unwrap()
                .len(),
            count
        );
    }

    forgejo.inject_fault(
        runners_path,
        Fault::Body(201, fixture!("register_runner_v15.json").into()),
        Times::Once,
    );
    let registered = client
        .register_runner(
            &acme(),
            &forgejo::RegisterRunner {
                name: "r".into(),
                description: String::new(),
                ephemeral: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(registered.id, 130802);
    assert_eq!(
        registered.token.expose(),
        "8e1f0c2d3b4a59687766554433221100ffeeddcc"
    );

    forgejo.inject_fault(
        runners_path,
        Fault::Body(200, fixture!("runners_v15.json").into()),
        Times::Once,
    );
    assert_eq!(client.list_runners(&acme()).await.unwrap().len(), 2);

    forgejo.inject_fault(
        "/api/v1/orgs/acme/actions/runners/registration-token",
        Fault::Body(200, fixture!("registration_token.json").into()),
        Times::Once,
    );
    let token = client.registration_token(&acme()).await.unwrap();
    assert_eq!(token.expose(), "Qm9ndXNSZWdpc3RyYXRpb25Ub2tlbkZvclRlc3Rz0");

    forgejo.inject_fault(
        jobs_path,
        Fault::Body(403, fixture!("error_403.json").into()),
        Times::Once,
    );
    let err = client.list_jobs(&acme(), Some(&labels)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Forbidden { answer, .. } if answer.starts_with("a JSON error message")),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("write:organization]"));

    forgejo.inject_fault(
        jobs_path,
        Fault::Body(404, fixture!("error_404.json").into()),
        Times::Once,
    );
    let err = client.list_jobs(&acme(), Some(&labels)).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { answer, .. } if answer.starts_with("a JSON error message")),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("couldn't be found"));
}
