use super::send::backoff;
use super::*;
use crate::NewHook;

#[test]
fn backoff_doubles_with_jitter_and_caps() {
    let base = Duration::from_millis(100);
    for _ in 0..50 {
        let first = backoff(base, 1);
        assert!(
            first >= Duration::from_millis(50) && first <= base,
            "{first:?}"
        );
        let third = backoff(base, 3);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        assert!(backoff(base, 40) <= MAX_BACKOFF);
    }
}

#[test]
fn server_urls_are_validated_and_normalized() {
    assert_eq!(
        parse_server("https://code.example.com/").unwrap().as_str(),
        "https://code.example.com/"
    );
    assert_eq!(
        parse_server(" https://example.com/forgejo/ ")
            .unwrap()
            .as_str(),
        "https://example.com/forgejo"
    );
    for bad in [
        "ftp://x",
        "not a url",
        "https://example.com/?a=b",
        "http://",
    ] {
        assert!(
            matches!(parse_server(bad), Err(Error::InvalidUrl { .. })),
            "{bad}"
        );
    }
    let e = parse_server("https://me:hunter2@example.com").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!format!("{e:?}").contains("hunter2"));
}

#[tokio::test]
async fn urls_are_built_per_scope_with_encoded_segments() {
    let client = Client::new(
        "https://example.com/sub",
        Token::new("t"),
        ClientOptions::default(),
    )
    .unwrap();
    let scope = Scope::Repository {
        owner: "acme".into(),
        repo: "my app".into(),
    };
    let call = client
        .call(
            Operation::get("list_jobs", ""),
            &scope.runners_segments(false),
            None,
            None,
        )
        .unwrap();
    assert_eq!(
        call.endpoint.path,
        "/sub/api/v1/repos/acme/my%20app/actions/runners"
    );
    assert_eq!(client.server(), "https://example.com/sub");
    assert!(format!("{client:?}").contains("Token(***)"));
}

#[test]
fn hook_urls_are_built_per_scope_including_user_and_system_hooks() {
    let client = Client::new(
        "https://example.com/sub",
        Token::new("t"),
        ClientOptions::default(),
    )
    .unwrap();
    let cases = [
        (
            Scope::repository("acme/my app").unwrap(),
            "/sub/api/v1/repos/acme/my%20app/hooks",
        ),
        (
            Scope::Organization("acme".into()),
            "/sub/api/v1/orgs/acme/hooks",
        ),
        (Scope::User, "/sub/api/v1/user/hooks"),
        (Scope::Instance, "/sub/api/v1/admin/hooks"),
    ];
    for (scope, path) in cases {
        let list = client
            .call(
                Operation::get("list_hooks", ""),
                &scope.hooks_segments(),
                None,
                None,
            )
            .unwrap();
        assert_eq!(list.endpoint.path, path, "{scope}");
        let mut segments = scope.hooks_segments();
        segments.push("42");
        let delete = client
            .call(Operation::delete("delete_hook", ""), &segments, None, None)
            .unwrap();
        assert_eq!(delete.endpoint.path, format!("{path}/42"), "{scope}");
        assert_eq!(delete.endpoint.method, "DELETE");
    }
}

#[tokio::test]
async fn a_hook_without_events_secret_or_web_url_is_refused_before_sending() {
    let requests = Arc::new(Mutex::new(0u32));
    let counted = requests.clone();
    let options = ClientOptions {
        observer: Some(Arc::new(move |_| {
            *counted.lock().unwrap() += 1;
        })),
        ..ClientOptions::default()
    };
    // Nothing listens here: a request that went out would fail as a connection error.
    let client = Client::new("http://127.0.0.1:9", Token::new("t"), options).unwrap();
    let good = NewHook {
        url: "https://ops.example.com/hook".into(),
        secret: "s3cret-hook-key".into(),
        events: vec!["workflow_job_waiting".into()],
    };
    let bad = [
        NewHook {
            events: Vec::new(),
            ..good.clone()
        },
        NewHook {
            events: vec![" ".into()],
            ..good.clone()
        },
        NewHook {
            secret: String::new(),
            ..good.clone()
        },
        NewHook {
            url: "ftp://ops.example.com/s3cret-hook-key".into(),
            ..good.clone()
        },
        NewHook {
            url: "not a url".into(),
            ..good.clone()
        },
    ];
    for hook in &bad {
        let err = client
            .create_hook(&Scope::Organization("acme".into()), hook)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidHook { .. }), "{err:?}");
        assert_eq!(err.reason(), "InvalidHook");
        assert!(!err.is_retryable() && err.endpoint().is_none());
        assert!(
            !format!("{err} {err:?}").contains("s3cret-hook-key"),
            "{err}"
        );
    }
    assert_eq!(*requests.lock().unwrap(), 0, "no request went out");
}
