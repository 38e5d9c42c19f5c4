//! `cargo xtask test`: every tier, in the order that fails fastest. The cluster tier starts the
//! cluster (control plane and real node) itself, imports the images, and stops it afterwards,
//! also when tests fail; then it checks that `down` left nothing behind on the machine.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cluster;

/// Environment variable holding the admin kubeconfig for the cluster tier.
pub const ADMIN_KUBECONFIG_ENV: &str = "FRC_TEST_KUBECONFIG";
/// Environment variable holding the kubeconfig of the operator's ServiceAccount.
pub const OPERATOR_KUBECONFIG_ENV: &str = "FRC_TEST_OPERATOR_KUBECONFIG";
/// Environment variable holding the kubectl built with the control plane.
pub const KUBECTL_ENV: &str = "FRC_TEST_KUBECTL";
/// The xtask binary, for tests that restart components of the cluster.
pub const XTASK_ENV: &str = "FRC_TEST_XTASK";
/// Environment variable holding the address pods reach this machine at (test servers bind it).
pub const NODE_IP_ENV: &str = "FRC_TEST_NODE_IP";
/// Environment variable holding the runner test image (`/bin/forgejo-runner` = the double,
/// or the real runner given in `FRC_E2E_RUNNER`).
pub const RUNNER_IMAGE_ENV: &str = "FRC_TEST_RUNNER_IMAGE";
/// Environment variable holding the label image of kubernetes-mode tests.
pub const LABEL_IMAGE_ENV: &str = "FRC_TEST_LABEL_IMAGE";
/// Environment variable holding the kustomize overlay that installs the operator in-cluster.
pub const OVERLAY_ENV: &str = "FRC_TEST_OVERLAY";
/// The overlay installing the previous release, serving the upgrade tier's namespace.
pub const PREVIOUS_OVERLAY_ENV: &str = "FRC_TEST_PREVIOUS_OVERLAY";
/// The overlay installing this release over it, serving the same namespace.
pub const UPGRADE_OVERLAY_ENV: &str = "FRC_TEST_UPGRADE_OVERLAY";

/// Runs fmt, clippy, the drift check, the module graph check, the unit tiers, then the
/// cluster tier.
pub fn run(root: &Path) -> anyhow::Result<()> {
    step(root, "cargo", &["fmt", "--all", "--check"], &[])?;
    step(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // Outside tests, no function is over 100 lines and none takes more than 7 arguments.
    step(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--lib",
            "--bins",
            "--all-features",
            "--",
            "-D",
            "warnings",
            "-D",
            "clippy::too_many_lines",
            "-D",
            "clippy::too_many_arguments",
        ],
        &[],
    )?;
    println!("==> cargo xtask gen-crds --check");
    crate::gen_crds::run(root, true)?;
    let crates = crate::module_graph::run(root)?;
    println!("==> module graph: no import circle in {crates} crates");
    step(
        root,
        "cargo",
        &["test", "--workspace", "--all-features"],
        &[],
    )?;

    cluster_tier(root, &[])?;
    println!("==> all tiers passed");
    Ok(())
}

/// Starts the control plane, installs deploy/, runs the ignored (cluster) tests with `extra`
/// libtest arguments, and stops the control plane whatever happened.
pub fn cluster_tier(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    // Every test binary runs even when one fails: one report shows every failure.
    let mut args: Vec<String> = [
        "test",
        "--workspace",
        "--all-features",
        "--no-fail-fast",
        "--",
        "--ignored",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().cloned());
    run_tier(root, &args, &[])
}

/// `cargo xtask chaos`: the fault tier's full set (longer outages, more kill rounds), one
/// scenario at a time so that each one's figures are its own.
pub fn chaos(root: &Path) -> anyhow::Result<()> {
    let args = [
        "test",
        "-p",
        "operator",
        "--test",
        "faults",
        "--test",
        "apiserver_faults",
        "--test",
        "in_cluster",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(str::to_owned);
    run_tier(root, &args, &[("FRC_CHAOS", "full")])
}

/// Starts the control plane, runs `cargo <args>` against it, stops it whatever happened.
fn run_tier(root: &Path, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let sysctls_before = crate::node::current_sysctls();
    println!("==> cluster tier: building the test images");
    let images = crate::image::build_all(root, None).context("building the test images")?;
    let previous = crate::previous_release::build_image(root)
        .context("building the previous release's operator image (upgrade tier)")?;
    println!("==> cluster tier: starting the local cluster");
    let info = cluster::up(root).context("starting the cluster for the cluster tier")?;
    let result = run_cluster_tests(root, &info, &images, previous, args, env);
    // Read after the tests: the fault tier restarts components (new pids).
    let pids = cluster::recorded_pids(root)?;
    println!("==> stopping the local cluster");
    let stopped = cluster::down(root);
    let clean = check_down_left_nothing(root, &pids, &sysctls_before);
    result?;
    stopped?;
    clean
}

fn run_cluster_tests(
    root: &Path,
    info: &cluster::ClusterInfo,
    images: &crate::image::TestImages,
    previous: crate::image::BuiltImage,
    cargo_args: &[String],
    extra_env: &[(&str, &str)],
) -> anyhow::Result<()> {
    for image in images.all() {
        cluster::import_image(root, &image.tar)?;
    }
    let upgrade = crate::previous_release::overlays(root, previous, &images.operator.reference)?;
    cluster::import_image(root, &upgrade.image.tar)?;
    let previous_overlay = upgrade.previous_overlay.display().to_string();
    let upgrade_overlay = upgrade.current_overlay.display().to_string();
    // The overlay installs deploy/ with the local operator image: the in-cluster replicas
    // serve one namespace of their own (see in_cluster.rs); other tests run the operator
    // binary as the same ServiceAccount.
    let overlay = cluster::write_test_overlay(root, &images.operator.reference)?;
    let operator_kubeconfig =
        cluster::install_identity_from(root, &info.admin_kubeconfig, &overlay)?;
    let admin = info.admin_kubeconfig.display().to_string();
    let operator = operator_kubeconfig.display().to_string();
    let kubectl = cluster::ensure_binaries(root)?
        .kubectl()
        .display()
        .to_string();
    let node_ip = crate::node::NODE_IP.to_string();
    let overlay = overlay.display().to_string();
    // The fault tier starts components of the cluster again with `xtask cluster up`. A copy:
    // `cargo test --all-features` relinks target/debug/xtask, and the running one's path
    // then names a deleted file.
    let running = std::env::current_exe().context("locating the xtask binary")?;
    let copy = root.join("target").join("cluster").join("xtask");
    std::fs::copy(&running, &copy)
        .with_context(|| format!("copying {} to {}", running.display(), copy.display()))?;
    let xtask = copy.display().to_string();
    let args: Vec<&str> = cargo_args.iter().map(String::as_str).collect();
    step(
        root,
        "cargo",
        &args,
        &[
            (ADMIN_KUBECONFIG_ENV, admin.as_str()),
            (OPERATOR_KUBECONFIG_ENV, operator.as_str()),
            (KUBECTL_ENV, kubectl.as_str()),
            (NODE_IP_ENV, node_ip.as_str()),
            (RUNNER_IMAGE_ENV, images.runner.reference.as_str()),
            (LABEL_IMAGE_ENV, images.label.reference.as_str()),
            (OVERLAY_ENV, overlay.as_str()),
            (PREVIOUS_OVERLAY_ENV, previous_overlay.as_str()),
            (UPGRADE_OVERLAY_ENV, upgrade_overlay.as_str()),
            (XTASK_ENV, xtask.as_str()),
        ]
        .into_iter()
        .chain(extra_env.iter().copied())
        .collect::<Vec<_>>(),
    )
}

/// Fails naming every process, mount, link, path, cgroup or kernel setting `down` left.
fn check_down_left_nothing(
    root: &Path,
    pids: &[u32],
    sysctls_before: &[(String, String)],
) -> anyhow::Result<()> {
    let mut left = cluster::leftovers(root, pids);
    let after = crate::node::current_sysctls();
    for ((key, before), (_, now)) in sysctls_before.iter().zip(&after) {
        // One that did not exist before `up` (a module loaded since) has nothing to restore.
        if before != now && !before.is_empty() {
            left.push(format!("kernel setting {key} is {now}, was {before}"));
        }
    }
    if !left.is_empty() {
        bail!("cluster down left things behind:\n  {}", left.join("\n  "));
    }
    println!(
        "==> cluster down left nothing behind: {} processes gone, no mount, no {} link, no kube-proxy nftables table or kubelet iptables chain, {} kernel settings as before",
        pids.len(),
        crate::node::BRIDGE,
        after.len()
    );
    Ok(())
}

fn step(root: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    println!("==> {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
