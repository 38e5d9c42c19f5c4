use super::*;

#[test]
fn retry_after_reads_seconds_and_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut h = HeaderMap::new();
    h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
    assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
    h.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
    assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
    h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
    assert_eq!(parse_retry_after(&h, now), Some(MAX_RETRY_AFTER), "capped");
    h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(parse_retry_after(&h, now), None);
}

#[test]
fn bodies_are_described_never_quoted() {
    let mut h = HeaderMap::new();
    let forgejo = br#"{"message":"token is required","url":"x"}"#;
    let d = describe_body(&h, forgejo);
    assert_eq!(d, "a JSON error message (not shown) of 41 bytes");
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let d = describe_body(&h, b"<b>502 Bad   Gateway</b>");
    assert_eq!(d, "an HTML page of 24 bytes");
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let d = describe_body(&h, b"\n <!DOCTYPE html><p>secret-ish</p>");
    assert_eq!(d, "an HTML page of 34 bytes");
    let d = describe_body(&h, b"secret-ish");
    assert_eq!(d, "a body labelled JSON that does not parse of 10 bytes");
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-secret-ish"),
    );
    assert_eq!(
        describe_body(&h, b"x"),
        "a body of type application/x-secret-ish of 1 bytes"
    );
    h.insert(CONTENT_TYPE, HeaderValue::from_static("secret ish stuff"));
    assert_eq!(describe_body(&h, b"x"), "a body of unknown type of 1 bytes");
    assert_eq!(describe_body(&h, b""), "an empty body");
    assert_eq!(describe_body(&h, b"[1]"), "a JSON array of 3 bytes");
}

#[test]
fn json_errors_keep_their_position_but_not_the_bodys_values() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wire {
        id: i64,
        uuid: String,
    }
    let cases: [(&str, &str); 4] = [
        (
            r#"{"id": "secret-ish", "uuid": "u"}"#,
            "JSON that does not match the expected shape (found string, expected i64) at line 1 column 19",
        ),
        (
            r#"{"id": 1}"#,
            "JSON that does not match the expected shape (missing field `uuid`) at line 1 column 9",
        ),
        (
            r#"{"id": secret-ish}"#,
            "not valid JSON (syntax error at line 1 column 8)",
        ),
        (
            r#"{"id": 1, "uuid": "secr"#,
            "JSON that ends early (at line 1 column 23)",
        ),
    ];
    for (body, want) in cases {
        let e = serde_json::from_str::<Wire>(body).unwrap_err();
        assert_eq!(describe_json_error(&e), want, "{e}");
    }
}

#[test]
fn a_redirect_target_loses_its_query_and_credentials() {
    let mut h = HeaderMap::new();
    h.insert(
        LOCATION,
        HeaderValue::from_static("https://me:pw@sso.example.com/login?session=secret-ish#x"),
    );
    assert_eq!(
        redirect_location(&h, "tok").as_deref(),
        Some("https://sso.example.com/login")
    );
    h.insert(
        LOCATION,
        HeaderValue::from_static("/user/login?redirect_to=secret-ish"),
    );
    assert_eq!(redirect_location(&h, "tok").as_deref(), Some("/user/login"));
}

#[test]
fn auth_header_is_sensitive_and_rejects_bad_tokens() {
    let v = auth_header("abc").unwrap();
    assert!(v.is_sensitive());
    assert_eq!(v.to_str().unwrap(), "token abc");
    assert!(matches!(auth_header(""), Err(Error::InvalidToken)));
    assert!(matches!(auth_header("a\nb"), Err(Error::InvalidToken)));
}

#[test]
fn link_local_and_metadata_addresses_are_recognized() {
    for refused in [
        "169.254.169.254",
        "169.254.170.2",
        "169.254.0.1",
        "100.100.100.200",
        "fe80::1",
        "febf::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
    ] {
        let ip: IpAddr = refused.parse().unwrap();
        assert!(is_link_local_or_metadata(ip), "{refused}");
    }
    for allowed in [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.100.100.201",
        "8.8.8.8",
        "::1",
        "fd00::1",
        "fec0::1",
        "::ffff:10.0.0.1",
    ] {
        let ip: IpAddr = allowed.parse().unwrap();
        assert!(!is_link_local_or_metadata(ip), "{allowed}");
    }
}

/// A resolver that answers every name with fixed addresses.
#[derive(Clone)]
struct Fixed(Vec<SocketAddr>);

impl tower_service::Service<Name> for Fixed {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_iter()))
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_resolver_drops_metadata_addresses_unless_allowed() {
    use tower_service::Service;
    let name: Name = "forgejo.example".parse().unwrap();
    let mixed = vec![addr("169.254.169.254:80"), addr("10.0.0.5:80")];

    let mut guarded = GuardedResolver {
        inner: Fixed(mixed.clone()),
        allow_link_local: false,
    };
    let kept: Vec<SocketAddr> = guarded.call(name.clone()).await.unwrap().collect();
    assert_eq!(kept, [addr("10.0.0.5:80")]);

    let mut allowing = GuardedResolver {
        inner: Fixed(mixed.clone()),
        allow_link_local: true,
    };
    let kept: Vec<SocketAddr> = allowing.call(name.clone()).await.unwrap().collect();
    assert_eq!(kept, mixed);
}

#[tokio::test]
async fn a_name_resolving_to_a_metadata_address_is_refused_before_connecting() {
    let mut connector = HttpConnector::new_with_resolver(GuardedResolver {
        inner: Fixed(vec![addr("169.254.169.254:80")]),
        allow_link_local: false,
    });
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    let http: HyperClient<_, Full<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(connector);
    let request = Request::get("http://metadata.example/latest/meta-data/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let endpoint = Endpoint {
        name: "version",
        method: "GET",
        path: "/api/v1/version".into(),
    };

    let failure = send_failure(&endpoint, http.request(request).await.unwrap_err());

    assert!(!failure.may_have_arrived);
    let e = failure.error;
    assert!(
        matches!(&e, Error::ForbiddenAddress { host, address }
            if host == "metadata.example" && address.to_string() == "169.254.169.254"),
        "{e:?}"
    );
    assert_eq!(e.reason(), "ForbiddenAddress");
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(text.contains("169.254.169.254"), "{text}");
    assert!(text.contains("--allow-link-local-forgejo"), "{text}");
}

#[test]
fn an_empty_ca_bundle_is_a_tls_setup_error() {
    let e = build_http(Duration::from_secs(1), Some(b"not pem"), false)
        .err()
        .unwrap();
    assert_eq!(e.reason(), "TlsFailed");
    assert!(e.to_string().contains("CA bundle"), "{e}");
}
