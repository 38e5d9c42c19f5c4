//! `cache-server` on its own: how it refuses to start.

use crate::harness::{SECRET, Setup, message, text};

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

/// Fact (docs/testing.md, "What the real runner prints"): `cache-server --dir D` makes
/// `D/cache` first, and
/// on a directory it cannot write it ends at once, non-zero, with "Error: mkdir D/cache:
/// permission denied" as its last words, before listening. Played as in a pod: a volume owned by root with
/// mode 0755 (a hostPath, which `fsGroup` does not change) and the server running as uid
/// 1000. Root writes anywhere, so as root the test runs the server as 1000:1000; run by
/// another user, the volume is its own with mode 0555: the same refusal either way.
#[tokio::test]
async fn a_dir_it_cannot_write_ends_the_server_at_once_with_the_real_error() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    use std::time::{Duration, Instant};

    // Under /tmp, not $TMPDIR: uid 1000 must reach the binary and the volume.
    let root = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mode(root.path(), 0o755);
    // The built binary sits under the builder's target dir, which uid 1000 may not reach.
    let binary = root.path().join("forgejo-runner");
    std::fs::copy(crate::harness::DOUBLE, &binary).unwrap();
    mode(&binary, 0o755);
    let volume = root.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let volume_text = volume.display().to_string();
    let mut command = std::process::Command::new(&binary);
    command
        .args([
            "cache-server",
            "--secret",
            SECRET,
            "--dir",
            &volume_text,
            "--port",
            "0",
        ])
        .current_dir(root.path())
        .env("HOME", root.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        mode(&volume, 0o755);
        command.uid(1000).gid(1000);
    } else {
        mode(&volume, 0o555);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not end on a directory it cannot write");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some(format!("Error: mkdir {volume_text}/cache: permission denied").as_str()),
        "{stderr}"
    );
    // Before it, only the note that no config file was given: it never listened.
    let said: Vec<String> = stderr.lines().filter_map(message).collect();
    assert_eq!(
        said,
        ["No configuration file specified; using default settings."],
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
    assert!(!volume.join("cache").exists());
}
