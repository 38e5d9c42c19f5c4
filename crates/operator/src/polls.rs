//! Forgejo clients and polls shared between pools.
//!
//! Pools that share a server, a scope and a token share one client (one connection pool) and,
//! on Forgejo 14+, one unfiltered job listing per interval: each pool then keeps the jobs its
//! labels run with Forgejo's own rule (`api::runs_on_labels`, applied by the scheduler). Before 14 the label filter is mandatory,
//! so the listing is shared only between pools with the same label names.
//!
//! The scope's runner registrations (15+) are a second listing, made only for a pool that
//! asks for them (`scheduler::lists_registrations`) and shared the same way: an idle pool
//! costs one request per interval.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::RunnerDeployment;
use forgejo::{Client, ClientOptions, Scope, ServerVersion, Token};
use kube::runtime::reflector::ObjectRef;
use scheduler::{ForgejoJob, RegistrationStatus, RunnerRegistration};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::metrics::ForgejoMetrics;

/// How long a server's version is trusted before it is asked again (upgrades happen).
const VERSION_TTL: Duration = Duration::from_secs(600);
/// How long a client or poll nobody asked for is kept (a rotated token, a deleted pool).
const UNUSED_TTL: Duration = Duration::from_secs(3600);
/// How long a failed poll answers other callers.
const FAILURE_TTL: Duration = Duration::from_millis(500);

/// What one jobs listing of a (server, scope, token) found, in the scheduler's terms:
/// converted once per listing, and read (not copied) by every pool that shares it.
#[derive(Debug)]
pub struct PollData {
    /// The server's version.
    pub version: ServerVersion,
    /// The jobs listed (waiting and running), unfiltered on 14+.
    pub jobs: Vec<ForgejoJob>,
    /// When the listing finished.
    pub at: Instant,
}

/// One listing of a scope's runner registrations (15+), shared like the jobs.
#[derive(Debug)]
pub struct Registrations {
    /// The registrations listed.
    pub runners: Vec<RunnerRegistration>,
    /// When the listing finished.
    pub at: Instant,
}

/// What a pool's poll got: the jobs, and the registrations if it asked for them.
#[derive(Debug, Clone)]
pub struct Poll {
    /// The jobs listing.
    pub jobs: Arc<PollData>,
    /// The registrations listing; `None` when not asked for, or before Forgejo 15.
    pub registrations: Option<Arc<Registrations>>,
}

/// A poll's result, shared by every pool that asked for it.
pub type PollResult = Result<Poll, Arc<forgejo::Error>>;

/// A listing's result, as a slot keeps it for the pools that share it.
type Listed<T> = Option<(Instant, Result<Arc<T>, Arc<forgejo::Error>>)>;

/// The listings of one poll key, behind one lock: concurrent callers wait for one request.
#[derive(Default)]
struct Slot {
    jobs: Listed<PollData>,
    registrations: Listed<Registrations>,
}

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

type PollSlot = Arc<tokio::sync::Mutex<Slot>>;

/// How the operator talks to every Forgejo server.
#[derive(Debug, Clone, Default)]
pub struct ForgejoSettings {
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Extra CA certificates (PEM).
    pub extra_ca: Option<Vec<u8>>,
    /// Connect to link-local and cloud metadata addresses too.
    pub allow_link_local: bool,
}

/// What a pool asks [`SharedPolls::poll`] for.
pub struct PollRequest<'a> {
    /// The pool asking.
    pub pool: &'a PoolRef,
    /// Its Forgejo client.
    pub client: &'a Client,
    /// Its token (pools with the same token share a poll).
    pub token: &'a Token,
    /// The server's version.
    pub version: &'a ServerVersion,
    /// Its scope.
    pub scope: &'a Scope,
    /// Its label names.
    pub label_names: &'a [String],
    /// How old a poll may be and still answer (the pool's interval).
    pub max_age: Duration,
    /// Whether to list the scope's runner registrations too (15+), and how old a listing
    /// may be and still answer.
    pub registrations: Option<Duration>,
}

/// A pool, as the controller names it.
pub type PoolRef = ObjectRef<RunnerDeployment>;

/// Shared Forgejo clients, server versions and polls.
pub struct SharedPolls {
    options: ClientOptions,
    clients: Mutex<HashMap<ClientKey, (Instant, Client)>>,
    versions: Mutex<HashMap<String, (Instant, ServerVersion)>>,
    polls: Mutex<HashMap<PollKey, (Instant, PollSlot)>>,
    /// Pools whose last poll of a key failed: woken together when one poll of it succeeds.
    failed: Mutex<HashMap<PollKey, HashSet<PoolRef>>>,
    /// The pools that asked for each key, and when they last did: woken when its listing
    /// changes, so one listing per interval serves every pool at once.
    users: Mutex<HashMap<PollKey, HashMap<PoolRef, Instant>>>,
    /// Where woken pools go (the controller reconciles them now).
    recovered: mpsc::UnboundedSender<PoolRef>,
}

impl SharedPolls {
    /// Creates the shared state; every client reports its requests to `metrics`. Pools whose
    /// poll failed are sent to `recovered` as soon as another pool's poll of the same key
    /// works, and the pools sharing a listing as soon as a new one differs from the last.
    pub fn new(
        settings: ForgejoSettings,
        metrics: ForgejoMetrics,
        recovered: mpsc::UnboundedSender<PoolRef>,
    ) -> Self {
        let ForgejoSettings {
            request_timeout,
            extra_ca,
            allow_link_local,
        } = settings;
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
            allow_link_local,
            ..ClientOptions::default()
        };
        Self {
            options,
            clients: Mutex::default(),
            versions: Mutex::default(),
            polls: Mutex::default(),
            failed: Mutex::default(),
            users: Mutex::default(),
            recovered,
        }
    }

    /// The client for `server` with `token`, shared by every pool using the same pair.
    pub fn client(&self, server: &str, token: &Token) -> Result<Client, forgejo::Error> {
        let key = client_key(server, token);
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((used, client)) = clients.get_mut(&key) {
            *used = now;
            return Ok(client.clone());
        }
        // A client nobody asked for lately (a rotated token, a deleted pool) goes.
        clients.retain(|_, (used, _)| now.duration_since(*used) < UNUSED_TTL);
        self.forget_unused_polls(now);
        // Reuse the connection pool of another token's client for the same server.
        let client = match clients.iter().find(|(k, _)| k.server == key.server) {
            Some((_, (_, other))) => other.with_token(token.clone())?,
            None => Client::new(server, token.clone(), self.options.clone())?,
        };
        clients.insert(key, (now, client.clone()));
        Ok(client)
    }

    /// Drops polls, failure marks and versions nobody asked for within [`UNUSED_TTL`].
    fn forget_unused_polls(&self, now: Instant) {
        let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        polls.retain(|_, (used, _)| now.duration_since(*used) < UNUSED_TTL);
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| polls.contains_key(key));
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.retain(|key, _| polls.contains_key(key));
        for pools in users.values_mut() {
            pools.retain(|_, asked| now.duration_since(*asked) < UNUSED_TTL);
        }
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (at, _)| now.duration_since(*at) < VERSION_TTL);
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

    /// The jobs of `scope` (and, if asked for on 15+, its runner registrations), each from a
    /// listing younger than `max_age` if another pool made one, else from a new one.
    /// Concurrent callers wait for one request.
    pub async fn poll(&self, request: PollRequest<'_>) -> PollResult {
        let PollRequest {
            pool,
            client,
            token,
            version,
            scope,
            label_names,
            max_age,
            registrations,
        } = request;
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
        let now = Instant::now();
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .insert(pool.clone(), now);
        let slot = {
            let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
            let (used, slot) = polls
                .entry(key.clone())
                .or_insert_with(|| (now, PollSlot::default()));
            *used = now;
            slot.clone()
        };
        let mut slot = slot.lock().await;
        let before = slot
            .jobs
            .as_ref()
            .and_then(|(_, result)| result.as_ref().ok())
            .cloned();
        let jobs = shared_or_new(&mut slot.jobs, max_age, || {
            list_jobs(client, version, scope, labels.as_deref())
        })
        .await;
        if let (Some(before), Ok(data)) = (before, &jobs)
            && !Arc::ptr_eq(&before, data)
            && jobs_fingerprint(&before.jobs) != jobs_fingerprint(&data.jobs)
        {
            self.wake_users(&key, pool);
        }
        let result = match jobs {
            Ok(jobs)
                if let Some(registrations_age) = registrations
                    && version.supports_ephemeral_runners() =>
            {
                shared_or_new(&mut slot.registrations, registrations_age, || {
                    list_registrations(client, scope)
                })
                .await
                .map(|registrations| Poll {
                    jobs,
                    registrations: Some(registrations),
                })
            }
            Ok(jobs) => Ok(Poll {
                jobs,
                registrations: None,
            }),
            Err(error) => Err(error),
        };
        self.note_outcome(key, pool, result.is_ok());
        result
    }

    /// Wakes every other pool that shares `key`'s listing: they read the new listing now
    /// rather than at their own next interval.
    fn wake_users(&self, key: &PollKey, pool: &PoolRef) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for other in users.get(key).into_iter().flat_map(HashMap::keys) {
            if other != pool {
                let _ = self.recovered.send(other.clone());
            }
        }
    }

    /// Remembers a pool whose poll failed; after a success, wakes every other pool that
    /// failed on the same key, so that they proceed at once rather than after their backoff.
    fn note_outcome(&self, key: PollKey, pool: &PoolRef, ok: bool) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if !ok {
            failed.entry(key).or_default().insert(pool.clone());
            return;
        }
        for waiting in failed.remove(&key).into_iter().flatten() {
            if &waiting != pool {
                // The receiver lives as long as the controller; a send after it is harmless.
                let _ = self.recovered.send(waiting);
            }
        }
    }
}

/// The listing a slot keeps if it is young enough, else a new one, kept for the next caller.
/// A failure is shared only with callers that waited for the same request: a retry after
/// backoff must ask Forgejo again, not get the old error for a whole interval.
async fn shared_or_new<T, F, Fut>(
    listed: &mut Listed<T>,
    max_age: Duration,
    list: F,
) -> Result<Arc<T>, Arc<forgejo::Error>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, forgejo::Error>>,
{
    if let Some((at, result)) = listed.as_ref() {
        let fresh_enough = match result {
            Ok(_) => max_age,
            Err(_) => max_age.min(FAILURE_TTL),
        };
        if at.elapsed() < fresh_enough {
            return result.clone();
        }
    }
    let result = list().await.map(Arc::new).map_err(Arc::new);
    *listed = Some((Instant::now(), result.clone()));
    result
}

async fn list_jobs(
    client: &Client,
    version: &ServerVersion,
    scope: &Scope,
    labels: Option<&[String]>,
) -> Result<PollData, forgejo::Error> {
    let jobs = client.list_jobs(scope, labels).await?;
    Ok(PollData {
        version: version.clone(),
        jobs: forgejo_jobs(&jobs),
        at: Instant::now(),
    })
}

async fn list_registrations(
    client: &Client,
    scope: &Scope,
) -> Result<Registrations, forgejo::Error> {
    let runners = client.list_runners(scope).await?;
    Ok(Registrations {
        runners: registrations(&runners),
        at: Instant::now(),
    })
}

/// What a listing says that pools act on: which jobs, in which attempt and status.
fn jobs_fingerprint(jobs: &[ForgejoJob]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut seen: Vec<(i64, Option<i64>, &str)> = jobs
        .iter()
        .map(|job| (job.id, job.attempt, job.status.as_str()))
        .collect();
    seen.sort_unstable();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    seen.hash(&mut hasher);
    hasher.finish()
}

/// The listed jobs, in the scheduler's terms.
fn forgejo_jobs(jobs: &[forgejo::ActionRunJob]) -> Vec<ForgejoJob> {
    jobs.iter()
        .map(|job| ForgejoJob {
            id: job.id,
            attempt: job.attempt,
            handle: job.handle.clone(),
            repo_id: job.repo_id,
            owner_id: job.owner_id,
            name: job.name.clone(),
            runs_on: job.runs_on.clone(),
            status: job.status.clone(),
            task_id: job.task_id,
        })
        .collect()
}

/// Runner registrations in the scheduler's terms.
fn registrations(runners: &[forgejo::Runner]) -> Vec<RunnerRegistration> {
    runners
        .iter()
        .map(|runner| RunnerRegistration {
            id: runner.id,
            uuid: runner.uuid.clone(),
            name: runner.name.clone(),
            status: RegistrationStatus::from_api(&runner.status),
        })
        .collect()
}

fn client_key(server: &str, token: &Token) -> ClientKey {
    ClientKey {
        server: server.trim_end_matches('/').to_owned(),
        token_digest: Sha256::digest(token.expose().as_bytes()).into(),
    }
}

#[cfg(test)]
mod tests;
