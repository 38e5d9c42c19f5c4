//! `cargo xtask test`: every tier, in the order that fails fastest. The cluster tier starts the
//! control plane itself and stops it afterwards, also when tests fail.

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

/// Runs fmt, clippy, the drift check, the unit tiers, then the cluster tier.
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
    println!("==> cargo xtask gen-crds --check");
    crate::gen_crds::run(root, true)?;
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
    println!("==> cluster tier: starting the local control plane");
    let info = cluster::up(root).context("starting the control plane for the cluster tier")?;
    let result = cluster::install_operator_identity(root, &info.admin_kubeconfig).and_then(
        |operator_kubeconfig| {
            let admin = info.admin_kubeconfig.display().to_string();
            let operator = operator_kubeconfig.display().to_string();
            let kubectl = cluster::ensure_binaries(root)?
                .kubectl()
                .display()
                .to_string();
            let mut args = vec!["test", "--workspace", "--all-features", "--", "--ignored"];
            args.extend(extra.iter().map(String::as_str));
            step(
                root,
                "cargo",
                &args,
                &[
                    (ADMIN_KUBECONFIG_ENV, admin.as_str()),
                    (OPERATOR_KUBECONFIG_ENV, operator.as_str()),
                    (KUBECTL_ENV, kubectl.as_str()),
                ],
            )
        },
    );
    println!("==> stopping the local control plane");
    let stopped = cluster::down(root);
    result?;
    stopped
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
