//! The proxy in process, between a client and a recording upstream on loopback.

use std::sync::Mutex as StdMutex;

use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use runner_protocol::{Struct, string_value};

use super::forward::{Route, route};
use super::*;

const SECRET: &str = "proxy-unit-secret";

/// What the upstream received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A server that records each request and answers 207 with a header and a body.
async fn upstream() -> (String, Arc<StdMutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        sink.lock().unwrap().push(Received {
                            method: parts.method,
                            path_and_query: parts.uri.path_and_query().unwrap().to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let response = http::Response::builder()
                            .status(207)
                            .header("x-upstream", "yes")
                            .header("keep-alive", "timeout=5")
                            .body(Full::new(Bytes::from_static(b"answer")))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    // A path on the server's URL is not used: requests go to `/_apis/artifactcache/...`.
    (format!("http://127.0.0.1:{port}/ignored/"), seen)
}

fn config(server: &str) -> CacheConfig {
    CacheConfig {
        external_server: Some(server.to_owned()),
        secret: Some(Secret::new(SECRET)),
        host: Some("127.0.0.1".to_owned()),
        ..CacheConfig::default()
    }
}

fn task() -> Task {
    Task {
        context: Some(Struct {
            fields: [
                ("repository", "faro/app"),
                ("run_id", "42"),
                ("event_name", "push"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), string_value(v)))
            .collect(),
        }),
        ..Task::default()
    }
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (StatusCode, HeaderMap, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from_static(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn a_request_is_forwarded_signed_and_its_answer_passed_back() {
    let (server, seen) = upstream().await;
    let proxy = CacheProxy::start(&config(&server)).await.unwrap().unwrap();
    let external = format!("http://127.0.0.1:{}", proxy.port());
    assert_eq!(proxy.external_url(), external);
    let run = proxy.add_run(&task()).unwrap();
    assert_eq!(run.id.len(), 8);
    assert!(run.id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(run.url, format!("{external}/{}/", run.id));

    let (status, headers, body) = send(
        Method::PATCH,
        &format!("{}_apis/artifactcache/caches/5?x=1&y=%2F", run.url),
        &[
            ("content-range", "bytes 0-6/*"),
            ("forgejo-cache-repo", "someone/else"),
            ("x-forwarded-for", "10.9.9.9"),
        ],
        b"payload",
    )
    .await;
    assert_eq!(status.as_u16(), 207);
    assert_eq!(headers["x-upstream"], "yes");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
    assert_eq!(&body[..], b"answer");

    let received = seen.lock().unwrap().pop().unwrap();
    assert_eq!(received.method, Method::PATCH);
    assert_eq!(
        received.path_and_query,
        "/_apis/artifactcache/caches/5?x=1&y=%2F"
    );
    assert_eq!(&received.body[..], b"payload");
    let h = &received.headers;
    assert_eq!(h["content-range"], "bytes 0-6/*");
    assert_eq!(
        h["host"],
        server["http://".len()..].trim_end_matches("/ignored/")
    );
    assert!(h.get("x-forwarded-for").is_none());
    assert!(h.get(signing::WRITE_ISOLATION_KEY).is_none());
    let signed = signing::verify(h, &Secret::new(SECRET), signing::unix_now()).unwrap();
    assert_eq!(signed.repo, "faro/app");
    assert_eq!(signed.run_number, "42");
    assert_eq!(signed.run_id, run.id);
    assert_eq!(signed.host, external);
    assert!(signing::verify(h, &Secret::new("other"), signing::unix_now()).is_none());
}

#[tokio::test]
async fn unknown_runs_wrong_paths_and_methods_are_not_forwarded() {
    let (server, seen) = upstream().await;
    let proxy = CacheProxy::start(&config(&server)).await.unwrap().unwrap();
    let run = proxy.add_run(&task()).unwrap();
    let base = proxy.external_url().to_owned();
    let lookup = "_apis/artifactcache/cache?keys=k&version=1";

    let (status, _, body) = send(Method::GET, &format!("{base}/unknown/{lookup}"), &[], b"").await;
    assert_eq!((status, body.len()), (StatusCode::BAD_GATEWAY, 0));
    let (status, _, _) = send(Method::GET, &format!("{base}/{lookup}"), &[], b"").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, body) =
        send(Method::DELETE, &format!("{}{lookup}", run.url), &[], b"").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, OPTIONS");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(&body[..], b"Method Not Allowed\n");
    let caches = format!("{}_apis/artifactcache/caches/?a=1", run.url);
    let (status, headers, body) = send(Method::POST, &caches, &[], b"").await;
    assert_eq!((status, body.len()), (StatusCode::TEMPORARY_REDIRECT, 0));
    let location = format!("/{}/_apis/artifactcache/caches?a=1", run.id);
    assert_eq!(headers["location"], location.as_str());
    let cache = format!("{}_apis/artifactcache/cache/?keys=k&version=1", run.url);
    let (status, headers, body) = send(Method::GET, &cache, &[], b"").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    let location = format!("/{}/_apis/artifactcache/cache?keys=k&version=1", run.id);
    assert_eq!(headers["location"], location.as_str());
    let page = format!(
        "<a href=\"{}\">Moved Permanently</a>.\n\n",
        location.replace('&', "&amp;")
    );
    assert_eq!(body, page.as_bytes());
    assert!(seen.lock().unwrap().is_empty());

    let (status, _, _) = send(Method::GET, &format!("{}{lookup}", run.url), &[], b"").await;
    assert_eq!(status.as_u16(), 207);
    proxy.remove_run(&run.id);
    let (status, _, _) = send(Method::GET, &format!("{}{lookup}", run.url), &[], b"").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://127.0.0.1:{}/", closed.local_addr().unwrap().port());
    drop(closed);
    let proxy = CacheProxy::start(&config(&server)).await.unwrap().unwrap();
    let run = proxy.add_run(&task()).unwrap();
    let url = format!("{}_apis/artifactcache/cache?keys=k&version=1", run.url);
    let (status, _, _) = send(Method::GET, &url, &[], b"").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn the_config_decides_whether_and_where_it_runs() {
    let mut cache = config("http://127.0.0.1:1/");
    cache.enabled = Some(false);
    assert!(CacheProxy::start(&cache).await.unwrap().is_none());
    cache.enabled = None;
    cache.external_server = Some(String::new());
    assert!(CacheProxy::start(&cache).await.unwrap().is_none());

    let mut cache = config("http://127.0.0.1:1/");
    cache.secret = None;
    let error = CacheProxy::start(&cache).await.err().unwrap();
    assert!(matches!(error, ProxyError::NoSecret));
    cache.secret = Some(Secret::new(""));
    assert!(matches!(
        CacheProxy::start(&cache).await,
        Err(ProxyError::NoSecret)
    ));

    let cache = config("https://cache.example/");
    assert!(matches!(
        CacheProxy::start(&cache).await,
        Err(ProxyError::Target)
    ));

    let mut cache = config("http://127.0.0.1:1/");
    cache.actions_cache_url_override = Some("http://cache-proxy.example:9000".to_owned());
    let proxy = CacheProxy::start(&cache).await.unwrap().unwrap();
    assert_eq!(proxy.external_url(), "http://cache-proxy.example:9000");
    let run = proxy.add_run(&task()).unwrap();
    assert_eq!(
        run.url,
        format!("http://cache-proxy.example:9000/{}/", run.id)
    );

    let mut cache = config("http://127.0.0.1:1/");
    cache.host = None;
    let proxy = CacheProxy::start(&cache).await.unwrap().unwrap();
    let host = proxy
        .external_url()
        .strip_prefix("http://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| host.to_owned())
        .unwrap();
    assert!(host.parse::<std::net::Ipv4Addr>().is_ok(), "{host}");
}

#[test]
fn the_route_table_is_the_real_proxys() {
    let forward = |run_id, rest| Route::Forward { run_id, rest };
    let path = "/ab12/_apis/artifactcache/";
    assert_eq!(
        route(&Method::GET, &format!("{path}cache")),
        forward("ab12", "cache")
    );
    assert_eq!(
        route(&Method::POST, &format!("{path}caches")),
        forward("ab12", "caches")
    );
    for method in [Method::PATCH, Method::POST] {
        assert_eq!(
            route(&method, &format!("{path}caches/3")),
            forward("ab12", "caches/3")
        );
    }
    assert_eq!(
        route(&Method::GET, &format!("{path}artifacts/3")),
        forward("ab12", "artifacts/3")
    );
    assert_eq!(
        route(&Method::POST, &format!("{path}clean")),
        forward("ab12", "clean")
    );
    assert_eq!(
        route(&Method::GET, &format!("{path}caches/3")),
        Route::Options("OPTIONS, PATCH, POST")
    );
    for missing in [
        "/_apis/artifactcache/cache",
        "//_apis/artifactcache/cache",
        "/ab12/_apis/artifactcache/caches/",
        "/ab12/_apis/artifactcache/caches/3/x",
        "/ab12/other/cache",
    ] {
        assert_eq!(route(&Method::GET, missing), Route::NotFound, "{missing}");
    }
    // A trailing slash is redirected when the path without it is this method's endpoint.
    let caches = format!("{path}caches/");
    assert_eq!(route(&Method::POST, &caches), Route::Redirect);
    assert_eq!(route(&Method::PATCH, &caches), Route::NotFound);
    assert_eq!(
        route(&Method::GET, &format!("{path}cache/")),
        Route::Redirect
    );
    assert_eq!(
        route(&Method::DELETE, &format!("{path}cache/")),
        Route::NotFound
    );
    assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
    assert_eq!(
        target_of("http://10.96.0.12:4000/x/").as_deref(),
        Some("http://10.96.0.12:4000")
    );
    assert_eq!(
        target_of("http://cache").as_deref(),
        Some("http://cache:80")
    );
}
