//! `spec.webhook.url`: the operator registers the pool's `workflow_job_waiting` hook on its
//! scope (organization, repository) with the pool's token, replaces it when the secret
//! changes, deletes it with the pool, and says in `WebhookReady` when the token may not.

mod support;

use std::time::{Duration, Instant};

use forgejo_stand_in::StandInJob;
use serde_json::{Value, json};
use support::{Operator, World, free_addr, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// A pool of `scope` on `linux`, polling every 5 minutes, whose hook Forgejo calls at `url`.
fn pool(world: &World, name: &str, scope: Value, url: &str) -> Value {
    let mut spec = json!({
        "forgejoServer": world.forgejo.url(),
        "labels": "linux:host",
        "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
        "pollInterval": "5m",
        "maxRunners": 5,
        "webhook": {"secretRef": {"name": "hook"}, "url": url},
    });
    for (key, value) in scope.as_object().expect("a scope object") {
        spec[key] = value.clone();
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn the_operator_registers_the_hook_keeps_its_secret_and_deletes_it_with_the_pool() {
    let world = World::new("hook-reg").await;
    world.put_secret("hook", "secret", "first-secret").await;
    let hook_addr = free_addr();
    let _operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            &format!("--webhook-addr={hook_addr}"),
        ],
    );
    let org_url = format!("http://{hook_addr}/webhooks/{}/org", world.ns);
    let repo_url = format!("http://{hook_addr}/webhooks/{}/repo", world.ns);
    world
        .create_pool_from(pool(
            &world,
            "org",
            json!({"organization": "faro"}),
            &org_url,
        ))
        .await;
    world
        .create_pool_from(pool(
            &world,
            "repo",
            json!({"repository": "faro/app"}),
            &repo_url,
        ))
        .await;
    for name in ["org", "repo"] {
        world
            .wait_for_condition(name, "WebhookReady", "True", "Registered")
            .await;
    }
    let hooks = world.forgejo.hooks();
    let org_hook = hooks
        .iter()
        .find(|h| h.url == org_url)
        .expect("the org hook");
    let repo_hook = hooks
        .iter()
        .find(|h| h.url == repo_url)
        .expect("the repo hook");
    assert_eq!(org_hook.events, ["workflow_job_waiting"]);
    assert!(org_hook.active && repo_hook.active);
    assert_eq!(hooks.len(), 2, "{hooks:?}");

    // The registered hook wakes the pool: a job of a repository of faro gets its Job at once
    // although the pools poll every 5 minutes (both pools see it; one Job is made per pool
    // that may take it, as without webhooks).
    let added = Instant::now();
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    wait_until("a runner Job", LONG, || async {
        (!world.runner_jobs().await.is_empty()).then_some(())
    })
    .await;
    println!(
        "waiting -> runner Job through the registered hook: {} ms",
        added.elapsed().as_millis()
    );
    assert!(added.elapsed() < Duration::from_secs(2));

    // A new secret: the hook is replaced at the Secret's next recheck (every 30 s).
    world.put_secret("hook", "secret", "second-secret").await;
    let replaced = wait_until("the org hook replaced", 2 * LONG, || async {
        world
            .forgejo
            .hooks()
            .into_iter()
            .find(|h| h.url == org_url && h.id != org_hook.id)
    })
    .await;
    assert_eq!(
        world
            .forgejo
            .hooks()
            .iter()
            .filter(|h| h.url == org_url)
            .count(),
        1,
        "the old hook stayed"
    );

    // Deleting the pool deletes its hook.
    world
        .pools()
        .delete("org", &Default::default())
        .await
        .expect("deleting the pool");
    wait_until("the org hook deleted", LONG, || async {
        (!world.forgejo.hooks().iter().any(|h| h.id == replaced.id)).then_some(())
    })
    .await;
    assert!(world.forgejo.hooks().iter().any(|h| h.url == repo_url));
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_token_that_may_not_manage_hooks_is_named_in_the_condition_and_polling_goes_on() {
    let world = World::with_forgejo("hook-ro", |mut config| {
        config.read_only_tokens = std::mem::take(&mut config.tokens);
        config
    })
    .await;
    world.put_secret("hook", "secret", "a-secret").await;
    let hook_addr = free_addr();
    let _operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            &format!("--webhook-addr={hook_addr}"),
        ],
    );
    let url = format!("http://{hook_addr}/webhooks/{}/org", world.ns);
    world
        .create_pool_from(pool(&world, "org", json!({"organization": "faro"}), &url))
        .await;
    world
        .wait_for_condition("org", "WebhookReady", "False", "NotAllowed")
        .await;
    let rd = world.pools().get("org").await.expect("the pool");
    let message = rd
        .status
        .into_iter()
        .flat_map(|s| s.conditions)
        .find(|c| c.type_ == "WebhookReady")
        .map(|c| c.message)
        .expect("WebhookReady");
    assert!(message.contains("write:organization"), "{message}");
    assert!(!message.contains(&world.token), "the token leaked");
    world
        .wait_for_condition("org", "Ready", "True", "Polling")
        .await;
    assert!(world.forgejo.hooks().is_empty());
}
