//! Forgejo clients and polls shared between pools.
//!
//! Pools that share a server, a scope and a token share one client (one connection pool) and,
//! on Forgejo 14+, one unfiltered job listing per interval: each pool then keeps the jobs its
//! labels run with Forgejo's own rule (`it_runs_on`). Before 14 the label filter is mandatory,
//! so the listing is shared only between pools with the same label names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forgejo::{ActionRunJob, Client, ClientOptions, Runner, Scope, ServerVersion, Token};
use sha2::{Digest, Sha256};

use crate::metrics::ForgejoMetrics;

/// How long a server's version is trusted before it is asked again (upgrades happen).
const VERSION_TTL: Duration = Duration::from_secs(600);
/// How long a failed poll answers other callers.
const FAILURE_TTL: Duration = Duration::from_millis(500);

/// What one poll of a (server, scope, token) found.
#[derive(Debug)]
pub struct PollData {
    /// The server's version.
    pub version: ServerVersion,
    /// The jobs listed (waiting and running), unfiltered on 14+.
    pub jobs: Vec<ActionRunJob>,
    /// The scope's runner registrations (15+), `None` before 15.
    pub runners: Option<Vec<Runner>>,
    /// When the poll finished.
    pub at: Instant,
}

/// A poll's result, shared by every pool that asked for it.
pub type PollResult = Result<Arc<PollData>, Arc<forgejo::Error>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    server: String,
    token_digest: [u8; 32],
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PollKey {
    client: ClientKey,
    scope: Scope,
    /// `None` for an unfiltered (14+) listing, else the sorted label names.
    labels: Option<Vec<String>>,
}

type PollSlot = Arc<tokio::sync::Mutex<Option<(Instant, PollResult)>>>;

/// Shared Forgejo clients, server versions and polls.
pub struct SharedPolls {
    options: ClientOptions,
    clients: Mutex<HashMap<ClientKey, Client>>,
    versions: Mutex<HashMap<String, (Instant, ServerVersion)>>,
    polls: Mutex<HashMap<PollKey, PollSlot>>,
}

impl SharedPolls {
    /// Creates the shared state; every client reports its requests to `metrics`.
    pub fn new(
        request_timeout: Duration,
        extra_ca: Option<Vec<u8>>,
        metrics: ForgejoMetrics,
    ) -> Self {
        let observer: forgejo::Observer = Arc::new(move |outcome: forgejo::RequestOutcome| {
            metrics.observe(outcome.endpoint, outcome.outcome, outcome.duration);
        });
        let options = ClientOptions {
            request_timeout,
            // Retries stay short: the next poll comes soon, and a reconcile must not hang.
            max_attempts: 3,
            max_retry_time: request_timeout.min(Duration::from_secs(10)),
            extra_root_certs_pem: extra_ca,
            observer: Some(observer),
            ..ClientOptions::default()
        };
        Self {
            options,
            clients: Mutex::default(),
            versions: Mutex::default(),
            polls: Mutex::default(),
        }
    }

    /// The client for `server` with `token`, shared by every pool using the same pair.
    pub fn client(&self, server: &str, token: &Token) -> Result<Client, forgejo::Error> {
        let key = client_key(server, token);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        // Reuse the connection pool of another token's client for the same server.
        let client = match clients.iter().find(|(k, _)| k.server == key.server) {
            Some((_, other)) => other.with_token(token.clone())?,
            None => Client::new(server, token.clone(), self.options.clone())?,
        };
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The server's version, asked at most once per [`VERSION_TTL`].
    pub async fn version(&self, client: &Client) -> Result<ServerVersion, forgejo::Error> {
        let cached = {
            let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            versions
                .get(client.server())
                .filter(|(at, _)| at.elapsed() < VERSION_TTL)
                .map(|(_, v)| v.clone())
        };
        if let Some(version) = cached {
            return Ok(version);
        }
        let version = client.version().await?;
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                client.server().to_owned(),
                (Instant::now(), version.clone()),
            );
        Ok(version)
    }

    /// Forgets the server's version, e.g. after a 404 that may mean it was downgraded.
    pub fn forget_version(&self, server: &str) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(server);
    }

    /// The jobs (and, on 15+, runners) of `scope`, from a poll younger than `max_age` if
    /// another pool made one, else from a new one. Concurrent callers wait for one request.
    pub async fn poll(
        &self,
        client: &Client,
        token: &Token,
        version: &ServerVersion,
        scope: &Scope,
        label_names: &[String],
        max_age: Duration,
    ) -> PollResult {
        let labels = if version.supports_unfiltered_jobs() {
            None
        } else {
            let mut names = label_names.to_vec();
            names.sort();
            names.dedup();
            Some(names)
        };
        let key = PollKey {
            client: client_key(client.server(), token),
            scope: scope.clone(),
            labels: labels.clone(),
        };
        let slot = {
            let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
            polls.entry(key).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some((at, result)) = slot.as_ref() {
            // A failure is shared only with callers that waited for the same request: a retry
            // after backoff must ask Forgejo again, not get the old error for a whole interval.
            let fresh_enough = match result {
                Ok(_) => max_age,
                Err(_) => max_age.min(FAILURE_TTL),
            };
            if at.elapsed() < fresh_enough {
                return result.clone();
            }
        }
        let result = fetch(client, version, scope, labels.as_deref()).await;
        *slot = Some((Instant::now(), result.clone()));
        result
    }
}

async fn fetch(
    client: &Client,
    version: &ServerVersion,
    scope: &Scope,
    labels: Option<&[String]>,
) -> PollResult {
    let jobs = client.list_jobs(scope, labels).await.map_err(Arc::new)?;
    let runners = if version.supports_ephemeral_runners() {
        Some(client.list_runners(scope).await.map_err(Arc::new)?)
    } else {
        None
    };
    Ok(Arc::new(PollData {
        version: version.clone(),
        jobs,
        runners,
        at: Instant::now(),
    }))
}

fn client_key(server: &str, token: &Token) -> ClientKey {
    ClientKey {
        server: server.trim_end_matches('/').to_owned(),
        token_digest: Sha256::digest(token.expose().as_bytes()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forgejo::stand_in::{StandIn, StandInConfig, StandInJob};

    fn listings(forgejo: &StandIn) -> usize {
        forgejo
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/actions/runners/jobs"))
            .count()
    }

    async fn setup(token: &str) -> (StandIn, SharedPolls, Client, ServerVersion, Token) {
        // `version` needs a token the stand-in knows; tests swap in others afterwards.
        let forgejo = StandIn::start(StandInConfig::with_token("15.0.3+gitea-1.22.0", "good"));
        forgejo.add_job(StandInJob::new("faro/app", "build", &["docker"]));
        let polls = SharedPolls::new(Duration::from_secs(5), None, ForgejoMetrics::default());
        let token = Token::new(token);
        let client = polls.client(&forgejo.url(), &token).unwrap();
        let version = polls.version(&client).await.unwrap();
        (forgejo, polls, client, version, token)
    }

    #[tokio::test]
    async fn pools_sharing_server_scope_and_token_share_one_listing_per_interval() {
        let (forgejo, polls, client, version, token) = setup("good").await;
        let scope = Scope::Organization("faro".into());
        let interval = Duration::from_secs(30);
        let labels = ["docker".to_owned()];
        let other = ["other".to_owned()];
        let (a, b) = tokio::join!(
            polls.poll(&client, &token, &version, &scope, &labels, interval),
            polls.poll(&client, &token, &version, &scope, &other, interval),
        );
        assert_eq!(a.unwrap().jobs.len(), 1);
        assert_eq!(
            b.unwrap().jobs.len(),
            1,
            "unfiltered on 15: each pool filters itself"
        );
        polls
            .poll(&client, &token, &version, &scope, &labels, interval)
            .await
            .unwrap();
        assert_eq!(listings(&forgejo), 1);
        // Another token is another key: its own listing (here refused, as it is unknown).
        let other_token = Token::new("other");
        let other_client = polls.client(&forgejo.url(), &other_token).unwrap();
        let refused = polls
            .poll(
                &other_client,
                &other_token,
                &version,
                &scope,
                &labels,
                interval,
            )
            .await;
        assert!(refused.is_err());
        assert_eq!(listings(&forgejo), 2);
    }

    #[tokio::test]
    async fn a_failed_poll_is_asked_again_after_a_short_while_not_a_whole_interval() {
        let (forgejo, polls, _, version, _) = setup("good").await;
        let token = Token::new("wrong");
        let client = polls.client(&forgejo.url(), &token).unwrap();
        let scope = Scope::Organization("faro".into());
        let interval = Duration::from_secs(30);
        let labels = ["docker".to_owned()];
        let first = polls
            .poll(&client, &token, &version, &scope, &labels, interval)
            .await;
        assert_eq!(first.unwrap_err().reason(), "Unauthorized");
        assert_eq!(listings(&forgejo), 1);
        tokio::time::sleep(FAILURE_TTL + Duration::from_millis(100)).await;
        let _ = polls
            .poll(&client, &token, &version, &scope, &labels, interval)
            .await;
        assert_eq!(listings(&forgejo), 2, "the retry reached Forgejo");
    }
}
