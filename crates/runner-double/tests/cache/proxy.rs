//! `one-job`'s cache proxy between the steps and `cache-server`, with the steps the node
//! test runs in the runner image (busybox `wget` and `nc`).

use crate::harness::{CacheServer, SECRET, Setup, module_messages, text};

/// The node test's lookup (`crates/operator/tests/node.rs`, `CACHE_LOOKUP_STEP`): a miss.
const LOOKUP_STEP: &str = "wget -S -O /dev/null \"${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=frc-node&version=1\" 2>&1 | grep 'HTTP/'";

/// The node test's save (`CACHE_SAVE_STEP`): reserve, upload, commit with `nc`, except
/// that each `nc` keeps its side open until the answer. At the end of its input busybox
/// `nc` shuts its side, which Go's server takes as a cancel: the real proxy then answers
/// 502 and forwards nothing (checked against forgejo-runner's `act/cacheproxy`).
const SAVE_STEP: &str = r#"set -eu
u=${ACTIONS_CACHE_URL#http://}; hp=${u%%/*}; base=/${u#*/}; host=${hp%:*}; port=${hp##*:}
body='{"key":"frc-node-entry","version":"v1","cacheSize":15}'
reserved=$({ printf 'POST %s_apis/artifactcache/caches HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$base" "$hp" "${#body}" "$body"; sleep 1; } | nc "$host" "$port")
id=$(echo "$reserved" | sed -n 's/.*"cacheId": *\([0-9]*\).*/\1/p')
{ printf 'PATCH %s_apis/artifactcache/caches/%s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-14/*\r\nContent-Length: 15\r\n\r\nfrc-cached-data' "$base" "$id" "$hp"; sleep 1; } | nc "$host" "$port" | head -1
{ printf 'POST %s_apis/artifactcache/caches/%s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\n\r\n' "$base" "$id" "$hp"; sleep 1; } | nc "$host" "$port" | head -1
echo "saved cache entry $id""#;

/// The node test's reserve as it is: `nc` shuts its side after the request.
const HALF_CLOSED_RESERVE_STEP: &str = r#"u=${ACTIONS_CACHE_URL#http://}; hp=${u%%/*}; base=/${u#*/}; host=${hp%:*}; port=${hp##*:}
body='{"key":"frc-node-entry","version":"v1","cacheSize":15}'
printf 'POST %s_apis/artifactcache/caches HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$base" "$hp" "${#body}" "$body" | nc "$host" "$port" | head -1"#;

/// The node test's restore (`CACHE_RESTORE_STEP`): the hit names the archive, downloaded.
const RESTORE_STEP: &str = r#"set -eu
hit=$(wget -q -O- "${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=frc-node-entry&version=v1")
archive=$(echo "$hit" | sed -n 's/.*"archiveLocation": *"\([^"]*\)".*/\1/p')
echo "restored: $(wget -q -O- "$archive")""#;

/// The saved entry's lookup, printing its status line.
const HIT_STEP: &str = "wget -S -O /dev/null \"${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=frc-node-entry&version=v1\" 2>&1 | grep 'HTTP/'";

/// What the step sees of the proxy.
const URL_STEP: &str = "echo \"cache url: ${ACTIONS_CACHE_URL-unset}\"";

/// The `ACTIONS_CACHE_URL` a job's [`URL_STEP`] printed, checked to be
/// `http://{host}:{port}/{runId}/` with a run id of 8 hex digits; returns it and the id.
fn cache_url(rows: &[String]) -> (String, String) {
    let url = rows
        .iter()
        .find_map(|r| r.strip_prefix("cache url: "))
        .unwrap_or_else(|| panic!("no URL row: {rows:?}"))
        .to_owned();
    let rest = url.strip_prefix("http://").expect(&url);
    let (host_port, run) = rest.split_once('/').expect(&url);
    let (_, port) = host_port.rsplit_once(':').expect(&url);
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{url}");
    let id = run.strip_suffix('/').expect(&url).to_owned();
    assert!(
        id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{url}"
    );
    (url, id)
}

/// The address this machine reaches others from, found as the real runner finds it for its
/// proxy (the local end of a UDP socket "connected" outwards; no packet is sent), or
/// 127.0.0.1 without a route.
fn outbound_ip() -> String {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    match socket
        .connect(("8.8.8.8", 80))
        .and_then(|()| socket.local_addr())
    {
        Ok(addr) if !addr.ip().is_loopback() && !addr.ip().is_unspecified() => {
            addr.ip().to_string()
        }
        _ => "127.0.0.1".to_owned(),
    }
}

fn has_row(rows: &[String], wanted: &str) -> bool {
    rows.iter().any(|r| r.trim() == wanted)
}

/// Facts: the proxy signs each forwarded request with the pool's secret, a miss is 204, an
/// entry saved by one runner process is found (200) and downloaded by the next, through
/// that runner's own proxy (the hit's archive URL names it); the runner itself sends the
/// server nothing.
#[tokio::test]
async fn a_step_saves_through_the_proxy_and_a_later_job_restores_it() {
    let setup = Setup::new().await;
    let server = CacheServer::start(&setup, SECRET);
    // No `host`: the proxy puts the machine's address in the URL, as in a runner pod.
    let config = setup.runner_config(&server.url(), SECRET, None);
    let (save, handle) = setup.job(&[URL_STEP, LOOKUP_STEP, SAVE_STEP]);
    let out = setup.one_job(Some(&config), &handle).await;
    assert!(out.status.success(), "{}", text(&out));
    let rows = setup.forgejo.log_lines(save);
    assert_eq!(
        setup.forgejo.job(save).unwrap().status,
        "success",
        "{rows:?}"
    );
    let (first_url, first_id) = cache_url(&rows);
    let host = first_url
        .strip_prefix("http://")
        .and_then(|u| u.rsplit_once(':'))
        .map(|(host, _)| host.to_owned());
    assert_eq!(host, Some(outbound_ip()), "{first_url}");
    assert!(has_row(&rows, "HTTP/1.1 204 No Content"), "{rows:?}");
    assert_eq!(
        rows.iter()
            .filter(|r| r.trim() == "HTTP/1.0 200 OK")
            .count(),
        2,
        "upload and commit: {rows:?}"
    );
    assert!(has_row(&rows, "saved cache entry 1"), "{rows:?}");

    // A new runner process (the first was ephemeral) of the same repository.
    let later = Setup::new().await;
    let config = later.runner_config(&server.url(), SECRET, None);
    let (restore, handle) = later.job(&[URL_STEP, HIT_STEP, RESTORE_STEP]);
    let out_later = later.one_job(Some(&config), &handle).await;
    assert!(out_later.status.success(), "{}", text(&out_later));
    let rows = later.forgejo.log_lines(restore);
    assert_eq!(
        later.forgejo.job(restore).unwrap().status,
        "success",
        "{rows:?}"
    );
    let (_, later_id) = cache_url(&rows);
    assert_ne!(later_id, first_id, "each run has its own id");
    assert!(has_row(&rows, "HTTP/1.1 200 OK"), "{rows:?}");
    assert!(has_row(&rows, "restored: frc-cached-data"), "{rows:?}");

    // The entries are the server's files under its --dir.
    assert!(server.dir.join("index.json").is_file());
    let (code, printed) = server.stop();
    assert_eq!(code, Some(0), "{printed}");
    let served = module_messages(&printed, "cache_request");
    assert_eq!(
        served,
        [
            "GET /_apis/artifactcache/cache 204",
            "POST /_apis/artifactcache/caches 200",
            "PATCH /_apis/artifactcache/caches/1 200",
            "POST /_apis/artifactcache/caches/1 200",
            "GET /_apis/artifactcache/cache 200",
            "GET /_apis/artifactcache/cache 200",
            "GET /_apis/artifactcache/artifacts/1 200",
        ],
        "{printed}"
    );
    for output in [text(&out), text(&out_later), printed] {
        assert!(!output.contains(SECRET), "the secret was printed: {output}");
    }
    // What the steps printed went to Forgejo only, as with the real runner.
    assert!(!text(&out).contains("saved cache entry"), "{}", text(&out));
    assert!(
        !text(&out_later).contains("restored:"),
        "{}",
        text(&out_later)
    );
}

/// Facts: a MAC that does not verify → 403, passed back to the step (busybox `wget`
/// prints the status line and exits 1); as with actions/cache, which only warns, the job
/// still succeeds. A run id the proxy does not know is refused (502, as Go's reverse proxy
/// answers a request it has no target for), and so is a request whose client shut its side
/// (502, Go's cancel): neither is forwarded.
#[tokio::test]
async fn a_wrong_secret_comes_back_as_403_and_unknown_runs_are_not_forwarded() {
    let setup = Setup::new().await;
    let server = CacheServer::start(&setup, SECRET);
    let config = setup.runner_config(&server.url(), "not-the-pool-secret", Some("127.0.0.1"));
    let exit_step = "wget -q -O /dev/null \"${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=frc-node&version=1\"; echo \"wget exit $?\"";
    let unknown_step = "wget -S -O /dev/null \"${ACTIONS_CACHE_URL%/*/}/unknown/_apis/artifactcache/cache?keys=frc-node&version=1\" 2>&1 | grep 'HTTP/'";
    let steps = [
        URL_STEP,
        LOOKUP_STEP,
        exit_step,
        unknown_step,
        HALF_CLOSED_RESERVE_STEP,
    ];
    let (job, handle) = setup.job(&steps);
    let out = setup.one_job(Some(&config), &handle).await;
    assert!(out.status.success(), "{}", text(&out));
    let rows = setup.forgejo.log_lines(job);
    let (url, _) = cache_url(&rows);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(has_row(&rows, "HTTP/1.1 403 Forbidden"), "{rows:?}");
    assert!(has_row(&rows, "wget exit 1"), "{rows:?}");
    assert!(has_row(&rows, "HTTP/1.1 502 Bad Gateway"), "{rows:?}");
    assert!(has_row(&rows, "HTTP/1.0 502 Bad Gateway"), "{rows:?}");
    assert_eq!(setup.forgejo.job(job).unwrap().status, "success");
    let (code, printed) = server.stop();
    assert_eq!(code, Some(0), "{printed}");
    let served = module_messages(&printed, "cache_request");
    assert_eq!(
        served,
        [
            "GET /_apis/artifactcache/cache 403",
            "GET /_apis/artifactcache/cache 403",
        ],
        "{printed}"
    );
    for output in [text(&out), printed] {
        assert!(!output.contains("not-the-pool-secret") && !output.contains(SECRET));
    }
}

/// Without `-c`, with `cache.enabled: false`, or with an external server and no secret
/// (the real runner then disables the cache, and says so once) there is no proxy and the
/// steps get no `ACTIONS_CACHE_URL`. (The real runner would run a built-in cache server
/// without `external_server`; the double runs none.)
#[tokio::test]
async fn without_a_usable_cache_config_the_steps_get_no_cache_url() {
    let no_secret = "cache:\n  enabled: true\n  external_server: \"http://127.0.0.1:1/\"\n";
    let disabled = format!("{no_secret}  secret: \"{SECRET}\"\n  enabled: false\n");
    let disabled = disabled.replace("  enabled: true\n", "");
    for config in [None, Some(no_secret), Some(disabled.as_str())] {
        // A runner of its own each time: they are ephemeral.
        let setup = Setup::new().await;
        let path = config.map(|c| setup.file("runner.yaml", c));
        let (job, handle) = setup.job(&[URL_STEP]);
        let out = setup.one_job(path.as_deref(), &handle).await;
        assert!(out.status.success(), "{}", text(&out));
        let rows = setup.forgejo.log_lines(job);
        assert!(has_row(&rows, "cache url: unset"), "{config:?}: {rows:?}");
        assert_eq!(setup.forgejo.job(job).unwrap().status, "success");
        let printed = text(&out);
        let said = printed
            .matches("A cache secret must be specified to use an external cache server")
            .count();
        assert_eq!(said, usize::from(config == Some(no_secret)), "{printed}");
        assert!(!printed.contains(SECRET), "{printed}");
    }
}
