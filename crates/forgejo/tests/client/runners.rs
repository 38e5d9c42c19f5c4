//! Runners: registration (v15), paged listing, deletion, legacy registration tokens.

use forgejo::{Error, RegisterRunner, Scope};
use forgejo_stand_in::{Fault, StandInConfig, StandInJob, Times};

use crate::{TOKEN, V14, V15, options, paths, start, start_with};

fn acme() -> Scope {
    Scope::Organization("acme".into())
}

fn ephemeral(name: &str) -> RegisterRunner {
    RegisterRunner {
        name: name.into(),
        description: "managed by the runner controller".into(),
        ephemeral: true,
    }
}

#[tokio::test]
async fn registering_an_ephemeral_runner_returns_id_uuid_and_token() {
    let (forgejo, client) = start(V15);

    let runner = client
        .register_runner(&acme(), &ephemeral("pool-1"))
        .await
        .unwrap();

    assert!(runner.id > 0);
    assert_eq!(runner.uuid.len(), 36);
    assert_eq!(runner.token.expose().len(), 40);
    assert!(
        !format!("{runner:?}").contains(runner.token.expose()),
        "the runner token is redacted"
    );
    let request = &forgejo.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/api/v1/orgs/acme/actions/runners")
    );
    let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "pool-1", "description": "managed by the runner controller", "ephemeral": true})
    );
    let stored = forgejo.runners();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].id, stored[0].ephemeral), (runner.id, true));
    assert_eq!(stored[0].uuid, runner.uuid);
}

#[tokio::test]
async fn each_scope_registers_runners_at_its_own_path() {
    let (forgejo, client) = start(V15);
    let scopes = [
        Scope::repository("acme/app").unwrap(),
        acme(),
        Scope::User,
        Scope::Instance,
    ];
    for scope in &scopes {
        client
            .register_runner(scope, &ephemeral("r"))
            .await
            .unwrap();
    }
    assert_eq!(
        paths(&forgejo),
        [
            "/api/v1/repos/acme/app/actions/runners",
            "/api/v1/orgs/acme/actions/runners",
            "/api/v1/user/actions/runners",
            "/api/v1/admin/actions/runners",
        ]
    );
    for scope in &scopes {
        assert_eq!(
            client.list_runners(scope).await.unwrap().len(),
            1,
            "{scope}"
        );
    }
}

#[tokio::test]
async fn listing_runners_follows_every_page() {
    let config = StandInConfig {
        max_page_size: 2,
        ..StandInConfig::with_token(V15, TOKEN)
    };
    let (forgejo, client) = start_with(config, options());
    for i in 0..5 {
        forgejo.add_runner(&acme(), &format!("r{i}"), i % 2 == 0);
    }
    forgejo.add_runner(&Scope::Organization("other".into()), "elsewhere", true);

    let runners = client.list_runners(&acme()).await.unwrap();

    let names: Vec<&str> = runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);
    assert!(runners[0].ephemeral && !runners[1].ephemeral);
    assert!(runners[0].labels.is_empty(), "null labels read as empty");
    assert_eq!(runners[0].status, "offline");
    let queries: Vec<Option<String>> = forgejo.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            Some("page=1&limit=50".to_owned()),
            Some("page=2&limit=50".to_owned()),
            Some("page=3&limit=50".to_owned()),
        ],
        "the server caps the page at 2; the client follows x-total-count"
    );
}

#[tokio::test]
async fn a_server_ignoring_pages_with_fewer_runners_than_a_page_costs_two_requests() {
    let (forgejo, client) = start(V15);
    for i in 0..3 {
        forgejo.add_runner(&acme(), &format!("r{i}"), true);
    }
    forgejo.inject_fault(
        "/api/v1/orgs/acme/actions/runners",
        Fault::IgnorePage,
        Times::Always,
    );

    let runners = client.list_runners(&acme()).await.unwrap();

    let names: Vec<&str> = runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r0", "r1", "r2"]);
    let requests = forgejo.requests().len();
    assert!(requests <= 2, "{requests} requests for one short page");
}

#[tokio::test]
async fn a_server_ignoring_pages_with_more_runners_than_a_page_stops_at_the_first_repeat() {
    let (forgejo, client) = start(V15);
    for i in 0..120 {
        forgejo.add_runner(&acme(), &format!("r{i}"), true);
    }
    forgejo.inject_fault(
        "/api/v1/orgs/acme/actions/runners",
        Fault::IgnorePage,
        Times::Always,
    );

    let runners = client.list_runners(&acme()).await.unwrap();

    assert_eq!(runners.len(), 50, "the one page the server gives, once");
    let mut ids: Vec<i64> = runners.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    let queries: Vec<Option<String>> = forgejo.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            Some("page=1&limit=50".to_owned()),
            Some("page=2&limit=50".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_empty_runner_list_is_one_request() {
    let (forgejo, client) = start(V15);

    assert!(client.list_runners(&acme()).await.unwrap().is_empty());
    assert_eq!(forgejo.requests().len(), 1);
}

#[tokio::test]
async fn deleting_a_runner_removes_it_and_a_missing_one_is_already_gone() {
    let (forgejo, client) = start(V15);
    let runner = client
        .register_runner(&acme(), &ephemeral("r"))
        .await
        .unwrap();

    client.delete_runner(&acme(), runner.id).await.unwrap();
    client.delete_runner(&acme(), runner.id).await.unwrap();

    assert!(forgejo.runners().is_empty());
    let requests = forgejo.requests();
    assert_eq!(requests.len(), 3, "a 404 is not retried");
    assert_eq!(requests[1].method, "DELETE");
    assert_eq!(
        requests[1].path,
        format!("/api/v1/orgs/acme/actions/runners/{}", runner.id)
    );
}

#[tokio::test]
async fn a_scope_cannot_delete_another_scopes_runner() {
    let (forgejo, client) = start(V15);
    let theirs = forgejo.add_runner(&Scope::Organization("other".into()), "r", true);

    // Forgejo answers 404 (not editable from here): the client reads it as gone, the runner stays.
    client.delete_runner(&acme(), theirs.id).await.unwrap();

    assert_eq!(forgejo.runners().len(), 1);
}

#[tokio::test]
async fn an_ephemeral_runner_is_deleted_by_forgejo_when_its_job_ends() {
    let (forgejo, client) = start(V15);
    let job = forgejo.add_job(StandInJob::new("acme/app", "build", &["docker"]));
    let runner = client
        .register_runner(&acme(), &ephemeral("r"))
        .await
        .unwrap();

    assert!(forgejo.take_job(job.id, runner.id));
    let listed = client.list_runners(&acme()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].status, "active",
        "a test's runner reports on its job"
    );
    assert!(forgejo.finish_job(job.id, "success"));

    assert!(client.list_runners(&acme()).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_runner_api_is_missing_before_v15() {
    let (_forgejo, client) = start(V14);

    let register = client
        .register_runner(&acme(), &ephemeral("r"))
        .await
        .unwrap_err();
    let list = client.list_runners(&acme()).await.unwrap_err();

    assert!(matches!(register, Error::NotFound { .. }), "{register:?}");
    assert!(matches!(list, Error::NotFound { .. }), "{list:?}");
    assert!(register.to_string().contains("15+"), "{register}");
}

#[tokio::test]
async fn registration_tokens_come_from_each_scope_and_are_stable() {
    for version in [V14, V15] {
        let (forgejo, client) = start(version);
        let scopes = [
            Scope::repository("acme/app").unwrap(),
            acme(),
            Scope::User,
            Scope::Instance,
        ];
        let mut tokens = Vec::new();
        for scope in &scopes {
            tokens.push(client.registration_token(scope).await.unwrap());
        }
        let again = client.registration_token(&acme()).await.unwrap();

        assert_eq!(again, tokens[1], "{version}: reused until rotated");
        assert_ne!(tokens[0], tokens[1]);
        assert_eq!(format!("{:?}", tokens[0]), "Token(***)");
        assert_eq!(
            paths(&forgejo)[..4],
            [
                "/api/v1/repos/acme/app/actions/runners/registration-token",
                "/api/v1/orgs/acme/actions/runners/registration-token",
                "/api/v1/user/actions/runners/registration-token",
                "/api/v1/admin/runners/registration-token",
            ]
        );
    }
}

#[tokio::test]
async fn a_runner_without_a_name_is_refused_without_quoting_the_servers_message() {
    let (_forgejo, client) = start(V15);

    let err = client
        .register_runner(&acme(), &ephemeral(""))
        .await
        .unwrap_err();

    assert!(
        matches!(err, Error::UnexpectedStatus { status: 422, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("[Name]"), "{err}");
    assert!(err.to_string().contains("a JSON error message"), "{err}");
}

#[tokio::test]
async fn one_runner_is_read_by_id_and_a_gone_one_is_none() {
    let (forgejo, client) = start(V15);
    let runner = client
        .register_runner(&acme(), &ephemeral("warm-0"))
        .await
        .unwrap();

    let read = client.get_runner(&acme(), runner.id).await.unwrap();
    let read = read.expect("the runner is there");
    assert_eq!((read.id, read.name.as_str()), (runner.id, "warm-0"));
    assert_eq!(read.status, "offline", "it never called Forgejo");
    let last = forgejo.requests().last().cloned().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path),
        (
            "GET",
            format!("/api/v1/orgs/acme/actions/runners/{}", runner.id)
        )
    );

    client.delete_runner(&acme(), runner.id).await.unwrap();
    assert_eq!(client.get_runner(&acme(), runner.id).await.unwrap(), None);
}
