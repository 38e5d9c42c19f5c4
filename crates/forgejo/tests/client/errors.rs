//! Error classes, retries, timeouts, the body cap, and the token staying secret.

use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forgejo::{Client, ClientOptions, Error, RegisterRunner, RequestOutcome, Scope, Token};
use forgejo_stand_in::{Fault, StandInConfig, Times};

use crate::{TOKEN, V15, options, start, start_with, v};

const JOBS: &str = "/api/v1/orgs/acme/actions/runners/jobs";

fn acme() -> Scope {
    Scope::Organization("acme".into())
}

async fn list(client: &Client) -> Result<Vec<forgejo::ActionRunJob>, Error> {
    client.list_jobs(&acme(), Some(&v(&["docker"]))).await
}

fn register_req() -> RegisterRunner {
    RegisterRunner {
        name: "r".into(),
        description: String::new(),
        ephemeral: true,
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

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_not_retried() {
    let forgejo = forgejo_stand_in::StandIn::start(StandInConfig::with_token(V15, "another-token"));
    let client = Client::new(&forgejo.url(), Token::new(TOKEN), options()).unwrap();

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.reason(), "Unauthorized");
    assert!(!err.is_retryable());
    assert_eq!(forgejo.requests().len(), 1);
    assert!(!forgejo.requests()[0].token_matched);
    assert_eq!(forgejo.requests()[0].token_index, None);
    assert!(err.to_string().contains(JOBS), "{err}");
}

#[tokio::test]
async fn a_read_only_token_is_forbidden_to_register_and_not_retried() {
    let config = StandInConfig {
        read_only_tokens: vec![TOKEN.into()],
        ..StandInConfig::default()
    };
    let (forgejo, client) = start_with(config, options());

    assert!(list(&client).await.is_ok(), "reading is allowed");
    let err = client
        .register_runner(&acme(), &register_req())
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    assert_eq!(err.reason(), "Forbidden");
    let text = err.to_string();
    assert!(text.contains("write:organization"), "{text}");
    assert!(text.contains("owner of the organization"), "{text}");
    assert!(text.contains("/api/v1/orgs/acme/actions/runners"), "{text}");
    assert_eq!(forgejo.requests().len(), 2);
    // Read-only tokens are counted after the full ones (none here).
    assert!(forgejo.requests().iter().all(|r| r.token_index == Some(0)));
}

#[tokio::test]
async fn an_unknown_organization_is_not_found_and_not_retried() {
    let config = StandInConfig {
        owners: Some(vec!["acme".into()]),
        ..StandInConfig::with_token(V15, TOKEN)
    };
    let (forgejo, client) = start_with(config, options());

    let err = client
        .list_jobs(&Scope::Organization("acne".into()), Some(&v(&["docker"])))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.reason(), "NotFound");
    assert!(err.to_string().contains("/api/v1/orgs/acne/"), "{err}");
    assert_eq!(forgejo.requests().len(), 1);
}

#[tokio::test]
async fn a_server_error_is_retried_then_succeeds() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Status(500), Times::Once);

    assert!(list(&client).await.unwrap().is_empty());
    assert_eq!(forgejo.requests().len(), 2);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_attempts() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Status(503), Times::Always);

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Server { status: 503, .. }), "{err:?}");
    assert_eq!(err.reason(), "ServerError");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("status 503 (a JSON error message (not shown) of"),
        "{err}"
    );
    assert!(!err.to_string().contains("injected fault"), "{err}");
    assert_eq!(forgejo.requests().len(), 3);
}

#[tokio::test]
async fn retries_stop_at_the_total_time_budget() {
    let budget = ClientOptions {
        max_attempts: 100,
        max_retry_time: Duration::from_millis(300),
        retry_base_delay: Duration::from_millis(100),
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), budget);
    forgejo.inject_fault(JOBS, Fault::Status(502), Times::Always);
    let started = Instant::now();

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Server { status: 502, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let attempts = forgejo.requests().len();
    assert!((2..10).contains(&attempts), "{attempts} attempts");
}

#[tokio::test]
async fn a_registration_is_not_retried_after_a_server_error() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(
        "/api/v1/orgs/acme/actions/runners",
        Fault::Status(500),
        Times::Once,
    );

    let err = client
        .register_runner(&acme(), &register_req())
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Server { status: 500, .. }), "{err:?}");
    assert_eq!(
        forgejo.requests().len(),
        1,
        "a retried POST could register twice"
    );
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    for status in [400u16, 401, 403, 404, 409, 422] {
        let (forgejo, client) = start(V15);
        forgejo.inject_fault(JOBS, Fault::Status(status), Times::Always);

        let err = list(&client).await.unwrap_err();

        assert_eq!(err.status(), Some(status), "{err:?}");
        assert!(!err.is_retryable(), "{status}");
        assert_eq!(forgejo.requests().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn rate_limiting_honours_retry_after() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::StatusWithRetryAfter(429, 1), Times::Once);
    let started = Instant::now();

    assert!(list(&client).await.is_ok());

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(forgejo.requests().len(), 2);
}

#[tokio::test]
async fn rate_limiting_beyond_the_budget_returns_the_retry_after() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::StatusWithRetryAfter(429, 120), Times::Always);

    let err = list(&client).await.unwrap_err();

    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(120)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "RateLimited");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(err.to_string().contains("retry after 120s"), "{err}");
    assert_eq!(
        forgejo.requests().len(),
        1,
        "waiting 120 s does not fit a 10 s budget"
    );
}

/// One attempt per call, so a `Retry-After` is not waited out inside the call.
fn single_attempt() -> ClientOptions {
    ClientOptions {
        max_attempts: 1,
        ..options()
    }
}

#[tokio::test]
async fn a_retry_after_holds_back_later_calls_of_every_client_of_the_server_without_a_request() {
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), single_attempt());
    forgejo.inject_fault(JOBS, Fault::StatusWithRetryAfter(429, 5), Times::Once);
    let first = list(&client).await.unwrap_err();
    assert!(matches!(first, Error::RateLimited { .. }), "{first:?}");
    assert_eq!(forgejo.requests().len(), 1);

    let other_token = client.with_token(Token::new("another-token")).unwrap();
    for caller in [client.clone(), other_token] {
        let err = list(&caller).await.unwrap_err();
        let Error::Deferred { retry_in, .. } = &err else {
            panic!("expected Deferred, got {err:?}");
        };
        assert!(
            *retry_in > Duration::from_secs(4) && *retry_in <= Duration::from_secs(5),
            "{retry_in:?}"
        );
        assert_eq!(err.reason(), "RateLimited");
        assert!(err.is_retryable());
        assert_eq!(err.status(), None, "no answer was received");
        assert_eq!(err.retry_after(), Some(*retry_in));
        assert!(err.to_string().contains(JOBS), "{err}");
        assert!(err.to_string().contains("not sent"), "{err}");
        let left = caller.retry_not_before().unwrap();
        assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
    }
    assert_eq!(forgejo.requests().len(), 1, "no request during the pause");
}

#[tokio::test]
async fn after_the_retry_after_pause_requests_go_out_again() {
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), single_attempt());
    forgejo.inject_fault(JOBS, Fault::StatusWithRetryAfter(429, 1), Times::Once);
    assert!(list(&client).await.is_err());
    assert!(matches!(list(&client).await, Err(Error::Deferred { .. })));
    assert_eq!(forgejo.requests().len(), 1);

    let left = client.retry_not_before().unwrap();
    tokio::time::sleep(left + Duration::from_millis(50)).await;

    assert_eq!(client.retry_not_before(), None);
    assert!(list(&client).await.is_ok());
    assert_eq!(forgejo.requests().len(), 2);
}

#[tokio::test]
async fn a_503_retry_after_also_pauses_and_a_huge_one_is_capped() {
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), single_attempt());
    forgejo.inject_fault(JOBS, Fault::StatusWithRetryAfter(503, 86_400), Times::Once);

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Server { status: 503, .. }), "{err:?}");
    let left = client.retry_not_before().unwrap();
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "capped at 10 minutes: {left:?}"
    );
    assert!(matches!(
        client.version().await,
        Err(Error::Deferred { .. })
    ));
}

#[tokio::test]
async fn rate_limiting_is_retried_even_for_registrations() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(
        "/api/v1/orgs/acme/actions/runners",
        Fault::StatusWithRetryAfter(429, 0),
        Times::Once,
    );

    client
        .register_runner(&acme(), &register_req())
        .await
        .unwrap();

    assert_eq!(forgejo.runners().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let fast = ClientOptions {
        request_timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), fast);
    forgejo.inject_fault(JOBS, Fault::Delay(Duration::from_secs(2)), Times::Always);
    let started = Instant::now();

    let err = list(&client).await.unwrap_err();

    assert!(
        matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "Timeout");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(forgejo.requests().len(), 2);
}

#[tokio::test]
async fn a_short_delay_within_the_timeout_is_fine() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Delay(Duration::from_millis(100)), Times::Once);

    assert!(list(&client).await.is_ok());
    assert_eq!(forgejo.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::new(
        &format!("http://127.0.0.1:{port}"),
        Token::new(TOKEN),
        options(),
    )
    .unwrap();

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert_eq!(err.reason(), "ConnectionFailed");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Reset, Times::Once);

    assert!(list(&client).await.is_ok());
    assert_eq!(forgejo.requests().len(), 2);
}

#[tokio::test]
async fn a_dropped_connection_every_time_is_a_connection_error() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Reset, Times::Always);

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert_eq!(forgejo.requests().len(), 3);
}

#[tokio::test]
async fn a_truncated_body_is_a_connection_error_and_retried() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Truncated, Times::Once);
    assert!(list(&client).await.is_ok());
    assert_eq!(forgejo.requests().len(), 2);

    forgejo.inject_fault(JOBS, Fault::Truncated, Times::Always);
    let err = list(&client).await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.to_string().contains("cut off"), "{err}");
}

#[tokio::test]
async fn a_malformed_body_is_an_invalid_response_described_by_position() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Malformed, Times::Always);

    let err = list(&client).await.unwrap_err();

    let Error::InvalidResponse {
        status,
        detail,
        answer,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*status, 200);
    assert_eq!(detail, "JSON that ends early (at line 1 column 26)");
    assert_eq!(
        answer,
        "a body labelled JSON that does not parse of 26 bytes"
    );
    assert!(!all_text(&err).contains("wait"), "{err:?}");
    assert_eq!(err.reason(), "InvalidResponse");
    assert!(!err.is_retryable());
    assert_eq!(forgejo.requests().len(), 1);
}

#[tokio::test]
async fn a_huge_streamed_body_hits_the_cap() {
    let capped = ClientOptions {
        max_body_bytes: 64 * 1024,
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), capped);
    forgejo.inject_fault(JOBS, Fault::Huge(512 * 1024 * 1024), Times::Always);
    let started = Instant::now();

    let err = list(&client).await.unwrap_err();

    assert!(
        matches!(err, Error::BodyTooLarge { limit: 65536, .. }),
        "{err:?}"
    );
    assert_eq!(err.reason(), "BodyTooLarge");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped reading early"
    );
    assert_eq!(forgejo.requests().len(), 1);
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_before_reading() {
    let capped = ClientOptions {
        max_body_bytes: 1024,
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), capped);
    let big = format!("[{}]", vec!["null"; 1000].join(","));
    forgejo.inject_fault(JOBS, Fault::Body(200, big), Times::Once);

    let err = list(&client).await.unwrap_err();

    assert!(
        matches!(err, Error::BodyTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_a_tls_error() {
    let (forgejo, _) = start(V15);
    let url = forgejo.url().replace("http://", "https://");
    let client = Client::new(&url, Token::new(TOKEN), options()).unwrap();

    let err = list(&client).await.unwrap_err();

    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert_eq!(err.reason(), "TlsFailed");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("CA"), "{err}");
}

#[tokio::test]
async fn bad_server_urls_and_tokens_are_refused_up_front() {
    for url in [
        "ftp://code.example.com",
        "code.example.com",
        "https://",
        "https://x/?token=1",
    ] {
        let err = Client::new(url, Token::new(TOKEN), options()).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        assert_eq!(err.reason(), "InvalidUrl");
    }
    let err = Client::new(
        "https://bot:hunter22@code.example.com",
        Token::new(TOKEN),
        options(),
    )
    .unwrap_err();
    assert!(!all_text(&err).contains("hunter22"), "{err}");
    let err = Client::new("https://code.example.com", Token::new("a\nb"), options()).unwrap_err();
    assert!(matches!(err, Error::InvalidToken), "{err:?}");
    let err = Client::new("https://code.example.com", Token::new(" \n"), options()).unwrap_err();
    assert!(matches!(err, Error::InvalidToken), "{err:?}");
}

#[tokio::test]
async fn link_local_and_metadata_server_addresses_are_refused_unless_allowed() {
    for server in [
        "http://169.254.169.254",
        "http://169.254.169.254/latest/meta-data",
        "https://[fe80::1]:3000",
        "http://[fd00:ec2::254]",
        "http://100.100.100.200",
        "http://[::ffff:169.254.169.254]",
        // WHATWG URL parsing reads this as 169.254.169.254.
        "http://2852039166",
    ] {
        let err = Client::new(server, Token::new(TOKEN), options()).unwrap_err();
        assert!(
            matches!(err, Error::ForbiddenAddress { .. }),
            "{server}: {err:?}"
        );
        assert_eq!(err.reason(), "ForbiddenAddress");
        assert!(!err.is_retryable(), "{server}");
        assert!(
            err.to_string().contains("--allow-link-local-forgejo"),
            "{err}"
        );
        let allowed = ClientOptions {
            allow_link_local: true,
            ..options()
        };
        assert!(
            Client::new(server, Token::new(TOKEN), allowed).is_ok(),
            "{server}"
        );
    }
    for server in [
        "http://127.0.0.1:3000",
        "http://10.0.0.1",
        "http://192.168.1.10",
        "http://[::1]:3000",
        "https://code.example.com",
    ] {
        assert!(
            Client::new(server, Token::new(TOKEN), options()).is_ok(),
            "{server}"
        );
    }
}

#[tokio::test]
async fn a_loopback_name_still_resolves_and_connects() {
    let forgejo = forgejo_stand_in::StandIn::start(StandInConfig::with_token(V15, TOKEN));
    let url = format!("http://localhost:{}", forgejo.addr().port());
    let client = Client::new(&url, Token::new(TOKEN), options()).unwrap();

    client.version().await.unwrap();
}

#[tokio::test]
async fn a_redirect_is_an_unexpected_status_naming_the_target() {
    let (forgejo, client) = start(V15);
    forgejo.inject_fault(JOBS, Fault::Status(301), Times::Once);

    let err = list(&client).await.unwrap_err();

    assert!(
        matches!(err, Error::UnexpectedStatus { status: 301, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn no_byte_of_an_answer_body_reaches_an_error() {
    let cases = [
        (
            JOBS,
            Fault::Body(500, "<html>secret-ish page text</html>".into()),
            "an HTML page of 33 bytes",
        ),
        (
            JOBS,
            Fault::Body(
                403,
                r#"{"message":"secret-ish message text","url":"http://x/secret-ish"}"#.into(),
            ),
            "a JSON error message (not shown) of 65 bytes",
        ),
        (
            JOBS,
            Fault::Body(422, r#"{"message":"secret-ish message text"}"#.into()),
            "a JSON error message (not shown) of 37 bytes",
        ),
        (
            JOBS,
            Fault::Body(401, "secret-ish plain text".into()),
            "a body labelled JSON that does not parse of 21 bytes",
        ),
        (
            JOBS,
            Fault::Body(200, r#"[{"id": "secret-ish"}]"#.into()),
            "a JSON array of 22 bytes",
        ),
        (
            "/api/v1/version",
            Fault::Body(200, r#"{"version": "secret-ish"}"#.into()),
            "a JSON object of 25 bytes",
        ),
    ];
    for (path, fault, described) in cases {
        let (forgejo, client) = start(V15);
        forgejo.inject_fault(path, fault.clone(), Times::Always);
        let err = if path == JOBS {
            list(&client).await.unwrap_err()
        } else {
            client.version().await.unwrap_err()
        };
        let text = all_text(&err);
        for secret in ["secret-ish", "page text", "message text", "<html>"] {
            assert!(
                !text.contains(secret),
                "{fault:?} leaked {secret:?}: {text}"
            );
        }
        assert!(err.to_string().contains(described), "{fault:?}: {err}");
    }
}

#[tokio::test]
async fn the_token_never_appears_in_any_error() {
    let echo = format!(r#"{{"message":"bad credentials: token {TOKEN}","url":"x"}}"#);
    let faults = [
        Fault::Body(401, echo.clone()),
        Fault::Body(403, echo.clone()),
        Fault::Body(404, echo.clone()),
        Fault::Body(422, echo.clone()),
        Fault::Body(500, echo.clone()),
        Fault::Body(500, format!("<html>Authorization: token {TOKEN}</html>")),
        Fault::Body(200, format!("not json, token {TOKEN}")),
        Fault::Body(200, format!(r#"{{"unexpected": "{TOKEN}"}}"#)),
        Fault::Body(200, format!("{}{TOKEN}", " ".repeat(390))),
        Fault::StatusWithRetryAfter(429, 100),
        Fault::Malformed,
        Fault::Truncated,
        Fault::Reset,
        Fault::Huge(100 * 1024 * 1024),
    ];
    let mut reasons = Vec::new();
    for fault in faults {
        let (forgejo, client) = start(V15);
        forgejo.inject_fault(JOBS, fault.clone(), Times::Always);
        let err = list(&client).await.unwrap_err();
        let text = all_text(&err);
        assert!(!text.contains(TOKEN), "{fault:?} leaked the token: {text}");
        assert!(
            !text.contains(&TOKEN[..12]),
            "{fault:?} leaked part of the token: {text}"
        );
        reasons.push(err.reason());
    }
    let timeout_client = {
        let (forgejo, _) = start(V15);
        forgejo.inject_fault(JOBS, Fault::Delay(Duration::from_secs(5)), Times::Always);
        let quick = ClientOptions {
            request_timeout: Duration::from_millis(100),
            max_attempts: 1,
            ..options()
        };
        (
            forgejo.clone(),
            Client::new(&forgejo.url(), Token::new(TOKEN), quick).unwrap(),
        )
    };
    let err = list(&timeout_client.1).await.unwrap_err();
    assert!(!all_text(&err).contains(TOKEN));
    reasons.push(err.reason());
    let tls = Client::new(
        &timeout_client.0.url().replace("http:", "https:"),
        Token::new(TOKEN),
        options(),
    )
    .unwrap();
    let err = list(&tls).await.unwrap_err();
    assert!(!all_text(&err).contains(TOKEN));
    reasons.push(err.reason());
    assert!(!format!("{tls:?}").contains(TOKEN));
    assert!(!format!("{:?}", options()).contains(TOKEN));

    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(
        reasons,
        [
            "BodyTooLarge",
            "ConnectionFailed",
            "Forbidden",
            "InvalidResponse",
            "NotFound",
            "RateLimited",
            "ServerError",
            "Timeout",
            "TlsFailed",
            "Unauthorized",
            "UnexpectedStatus",
        ]
    );
}

#[tokio::test]
async fn the_token_is_sent_only_in_the_authorization_header() {
    let (forgejo, client) = start(V15);
    client.version().await.unwrap();
    list(&client).await.unwrap();
    client
        .register_runner(&acme(), &register_req())
        .await
        .unwrap();

    for request in forgejo.requests() {
        assert!(request.token_matched, "{request:?}");
        let visible = format!("{} {:?} {:?}", request.path, request.query, request.body);
        assert!(!visible.contains(TOKEN), "{visible}");
    }
}

#[tokio::test]
async fn the_observer_sees_every_attempt() {
    let seen: Arc<Mutex<Vec<RequestOutcome>>> = Arc::default();
    let sink = seen.clone();
    let observed = ClientOptions {
        observer: Some(Arc::new(move |outcome| sink.lock().unwrap().push(outcome))),
        ..options()
    };
    let (forgejo, client) = start_with(StandInConfig::with_token(V15, TOKEN), observed);
    forgejo.inject_fault(JOBS, Fault::Status(500), Times::Once);

    list(&client).await.unwrap();
    client.version().await.unwrap();

    let seen = seen.lock().unwrap();
    let summary: Vec<(&str, &str, Option<u16>, u32)> = seen
        .iter()
        .map(|o| (o.endpoint, o.outcome, o.status, o.attempt))
        .collect();
    assert_eq!(
        summary,
        [
            ("list_jobs", "ServerError", Some(500), 1),
            ("list_jobs", "ok", Some(200), 2),
            ("version", "ok", Some(200), 1),
        ]
    );
}
