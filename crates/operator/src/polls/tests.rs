use super::*;
use forgejo_stand_in::{Fault, StandIn, StandInConfig, StandInJob, Times};

fn listings(forgejo: &StandIn) -> usize {
    forgejo
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/actions/runners/jobs"))
        .count()
}

fn registration_listings(forgejo: &StandIn) -> usize {
    forgejo
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/actions/runners"))
        .count()
}

fn pool(name: &str) -> PoolRef {
    ObjectRef::new(name).within("ci")
}

struct Setup {
    forgejo: StandIn,
    polls: SharedPolls,
    recovered: mpsc::UnboundedReceiver<PoolRef>,
    version: ServerVersion,
    scope: Scope,
}

impl Setup {
    async fn new() -> Self {
        // `version` needs a token the stand-in knows; tests swap in others afterwards.
        let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", "good"));
        forgejo.add_job(StandInJob::new("faro/app", "build", &["docker"]));
        let (sender, recovered) = mpsc::unbounded_channel();
        let settings = ForgejoSettings {
            request_timeout: Duration::from_secs(5),
            ..ForgejoSettings::default()
        };
        let polls = SharedPolls::new(settings, ForgejoMetrics::default(), sender);
        let client = polls.client(&forgejo.url(), &Token::new("good")).unwrap();
        let version = polls.version(&client).await.unwrap();
        Self {
            forgejo,
            polls,
            recovered,
            version,
            scope: Scope::Organization("faro".into()),
        }
    }

    async fn poll(&self, pool_name: &str, token: &str, labels: &[&str]) -> PollResult {
        self.poll_within(pool_name, token, labels, Duration::from_secs(30))
            .await
    }

    /// A poll that takes a shared listing only if it is younger than `max_age`.
    async fn poll_within(
        &self,
        pool_name: &str,
        token: &str,
        labels: &[&str],
        max_age: Duration,
    ) -> PollResult {
        self.poll_asking(pool_name, token, labels, max_age, false)
            .await
    }

    /// A poll that asks for the registrations too if `registrations`.
    async fn poll_asking(
        &self,
        pool_name: &str,
        token: &str,
        labels: &[&str],
        max_age: Duration,
        registrations: bool,
    ) -> PollResult {
        self.poll_listing(
            pool_name,
            token,
            labels,
            max_age,
            registrations.then_some(max_age),
        )
        .await
    }

    /// A poll whose jobs listing may be `max_age` old and whose registrations listing, if
    /// asked for, `registrations` old.
    async fn poll_listing(
        &self,
        pool_name: &str,
        token: &str,
        labels: &[&str],
        max_age: Duration,
        registrations: Option<Duration>,
    ) -> PollResult {
        let token = Token::new(token);
        let client = self.polls.client(&self.forgejo.url(), &token).unwrap();
        let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        self.polls
            .poll(PollRequest {
                pool: &pool(pool_name),
                client: &client,
                token: &token,
                version: &self.version,
                scope: &self.scope,
                label_names: &labels,
                max_age,
                registrations,
            })
            .await
    }
}

#[tokio::test]
async fn a_listing_that_changed_wakes_the_other_pools_sharing_it_at_once() {
    let mut setup = Setup::new().await;
    setup.poll("a", "good", &["docker"]).await.unwrap();
    setup.poll("b", "good", &["other"]).await.unwrap();
    setup.poll("c", "wrong", &["docker"]).await.unwrap_err();
    // The same jobs again: nobody is woken (an idle fleet stays idle).
    setup
        .poll_within("a", "good", &["docker"], Duration::ZERO)
        .await
        .unwrap();
    assert!(setup.recovered.try_recv().is_err());
    // A new job: the other pool of the listing is woken, not the asker, not another key.
    setup
        .forgejo
        .add_job(StandInJob::new("faro/app", "test", &["other"]));
    setup
        .poll_within("a", "good", &["docker"], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(setup.recovered.try_recv().ok(), Some(pool("b")));
    assert!(setup.recovered.try_recv().is_err());
    assert_eq!(listings(&setup.forgejo), 4);
}

#[tokio::test]
async fn pools_sharing_server_scope_and_token_share_one_listing_per_interval() {
    let setup = Setup::new().await;
    let (a, b) = tokio::join!(
        setup.poll("a", "good", &["docker"]),
        setup.poll("b", "good", &["other"]),
    );
    assert_eq!(a.unwrap().jobs.jobs.len(), 1);
    assert_eq!(
        b.unwrap().jobs.jobs.len(),
        1,
        "unfiltered on 15: each pool filters itself"
    );
    setup.poll("a", "good", &["docker"]).await.unwrap();
    assert_eq!(listings(&setup.forgejo), 1);
    // Another token is another key: its own listing (here refused, as it is unknown).
    let refused = setup.poll("c", "other", &["docker"]).await;
    assert!(refused.is_err());
    assert_eq!(listings(&setup.forgejo), 2);
}

#[tokio::test]
async fn registrations_are_listed_only_for_a_pool_that_asks_and_shared_like_the_jobs() {
    let setup = Setup::new().await;
    let interval = Duration::from_secs(30);
    let idle = setup.poll("a", "good", &["docker"]).await.unwrap();
    assert!(idle.registrations.is_none());
    assert_eq!(
        (
            listings(&setup.forgejo),
            registration_listings(&setup.forgejo)
        ),
        (1, 0),
        "an idle pool's poll is one request"
    );
    setup
        .forgejo
        .add_runner(&setup.scope, "forgejo-job-1-1-0123456789", true);
    let asking = setup
        .poll_asking("b", "good", &["docker"], interval, true)
        .await
        .unwrap();
    let listed = asking.registrations.expect("asked for");
    assert_eq!(listed.runners.len(), 1);
    assert!(
        Arc::ptr_eq(&idle.jobs, &asking.jobs),
        "the jobs listing is shared"
    );
    let again = setup
        .poll_asking("c", "good", &["other"], interval, true)
        .await
        .unwrap();
    assert!(Arc::ptr_eq(
        &listed,
        &again.registrations.expect("asked for")
    ));
    assert_eq!(
        (
            listings(&setup.forgejo),
            registration_listings(&setup.forgejo)
        ),
        (1, 1)
    );
    // A pool whose interval is shorter than the listing's age gets a new one.
    setup
        .poll_asking("c", "good", &["other"], Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(
        (
            listings(&setup.forgejo),
            registration_listings(&setup.forgejo)
        ),
        (2, 2)
    );
}

#[tokio::test]
async fn a_sweep_takes_a_registrations_listing_older_than_the_interval() {
    let setup = Setup::new().await;
    let sweep_age = Duration::from_secs(300);
    setup
        .poll_asking("a", "good", &["docker"], Duration::from_secs(30), true)
        .await
        .unwrap();
    // Another pool's sweep, with a fresh jobs listing: the registrations listing is shared.
    let swept = setup
        .poll_listing("b", "good", &["docker"], Duration::ZERO, Some(sweep_age))
        .await
        .unwrap();
    assert!(swept.registrations.is_some());
    assert_eq!(
        (
            listings(&setup.forgejo),
            registration_listings(&setup.forgejo)
        ),
        (2, 1),
        "one registrations listing for both"
    );
    // A pool that needs a current one does not take it.
    setup
        .poll_listing(
            "c",
            "good",
            &["docker"],
            Duration::ZERO,
            Some(Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(registration_listings(&setup.forgejo), 2);
}

#[tokio::test]
async fn a_failed_poll_is_asked_again_after_a_short_while_not_a_whole_interval() {
    let setup = Setup::new().await;
    let first = setup.poll("a", "wrong", &["docker"]).await;
    assert_eq!(first.unwrap_err().reason(), "Unauthorized");
    assert_eq!(listings(&setup.forgejo), 1);
    tokio::time::sleep(FAILURE_TTL + Duration::from_millis(100)).await;
    let _ = setup.poll("a", "wrong", &["docker"]).await;
    assert_eq!(listings(&setup.forgejo), 2, "the retry reached Forgejo");
}

#[tokio::test]
async fn when_one_pools_poll_succeeds_again_every_pool_that_failed_on_it_is_woken() {
    let mut setup = Setup::new().await;
    setup.forgejo.inject_fault(
        "/api/v1/orgs/faro/actions/runners/jobs",
        Fault::Status(503),
        Times::Always,
    );
    // Two pools of one key and one of another key fail during the outage.
    assert!(setup.poll("a", "good", &["docker"]).await.is_err());
    tokio::time::sleep(FAILURE_TTL + Duration::from_millis(50)).await;
    assert!(setup.poll("b", "good", &["docker"]).await.is_err());
    assert!(setup.poll("c", "wrong", &["docker"]).await.is_err());
    setup.forgejo.clear_faults();
    tokio::time::sleep(FAILURE_TTL + Duration::from_millis(50)).await;
    assert!(setup.poll("a", "good", &["docker"]).await.is_ok());
    let woken = setup.recovered.try_recv().expect("pool b is woken");
    assert_eq!(woken, pool("b"));
    assert!(
        setup.recovered.try_recv().is_err(),
        "only b: a polled itself, c polls with another token"
    );
}
