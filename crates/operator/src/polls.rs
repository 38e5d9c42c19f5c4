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
        if let Some((at, result)) = slot.as_ref()
            && at.elapsed() < max_age
        {
            return result.clone();
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
