//! `cache-server` on its own: how it refuses to start.

use crate::harness::{SECRET, Setup, text};

/// Facts: `cache-server` without a secret is a configuration error (exit 1); no error it
/// prints carries a secret it was given.
#[tokio::test]
async fn cache_server_errors_exit_1_and_never_print_the_secret() {
    let setup = Setup::new().await;
    let none = setup.file("none.yaml", "cache:\n  enabled: true\n  port: 0\n");
    let none = none.display().to_string();
    let out = setup
        .command(&["-c", &none, "cache-server"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no secret"), "{}", text(&out));

    // A config that does not parse, with the secret inline next to the bad key.
    let bad = setup.file(
        "bad.yaml",
        &format!("cache:\n  secret: \"{SECRET}\"\n  port: not-a-port\n"),
    );
    let bad = bad.display().to_string();
    let out = setup
        .command(&["-c", &bad, "cache-server"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&bad), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "{}", text(&out));

    // A secret on the command line and a --dir that cannot be created.
    let blocker = setup.file("blocker", "");
    let dir = blocker.join("cache").display().to_string();
    let out = setup
        .command(&[
            "cache-server",
            "--secret",
            SECRET,
            "--dir",
            &dir,
            "--port",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "{}", text(&out));

    let missing = setup.home.path().join("absent.yaml").display().to_string();
    let out = setup
        .command(&["-c", &missing, "cache-server"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&missing), "{}", text(&out));
}
