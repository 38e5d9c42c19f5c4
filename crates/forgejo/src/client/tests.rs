use super::send::backoff;
use super::*;

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
