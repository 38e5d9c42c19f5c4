//! Forgejo's `workflow_job` webhooks: the hooks created through the API, and the deliveries
//! a job's status changes cause. Deliveries are prepared under the state lock (so their order
//! is the order of the changes) and sent by `webhooks/dispatch.rs`, off the lock, one after
//! the other. Facts: Forgejo's `modules/structs/hook.go`, `services/webhook/deliver.go`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ring::hmac;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::random::random_uuid;
use forgejo::Scope;

mod dispatch;
pub(super) use dispatch::Dispatcher;

/// A webhook as tests see it: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: i64,
    /// The organization or repository it belongs to.
    pub scope: Scope,
    /// Its `type`: `forgejo` or `gitea` (the same payload).
    pub kind: String,
    /// Where it delivers (`config.url`).
    pub url: String,
    /// `json` or `form` (`config.content_type`).
    pub content_type: String,
    /// The event names it was created with, lowercased.
    pub events: Vec<String>,
    /// Whether it delivers at all.
    pub active: bool,
}

/// One delivery attempt, in the order the job changes happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The hook it went to.
    pub hook_id: i64,
    /// The event type, e.g. `workflow_job_waiting`.
    pub event: String,
    /// The payload's `action`: `new_job_attempt`, `job_status_changed` or `job_completed`.
    pub action: String,
    /// The job whose change it reports.
    pub job_id: i64,
    /// The `X-Forgejo-Delivery` uuid (shared by a duplicate and a redelivery).
    pub delivery: String,
    /// The receiver's answer status, once it answered.
    pub status: Option<u16>,
    /// Why there is no answer: a connection error, the timeout, or a dropping fault.
    pub error: Option<String>,
}

/// A fault applied to the next deliveries, until another is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFault {
    /// Deliver normally.
    #[default]
    None,
    /// Send nothing, but record each delivery as dropped.
    Drop,
    /// Wait this long before sending each delivery.
    Delay(Duration),
    /// Send each delivery twice, with the same `X-Forgejo-Delivery`.
    Duplicate,
}

/// Forgejo's `DELIVER_TIMEOUT` default: how long one delivery may take.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a dropped delivery records as its error.
const DROPPED: &str = "dropped by WebhookFault::Drop";

/// A hook as the stand-in stores it.
#[derive(Clone)]
struct HookRecord {
    hook: Webhook,
    /// `config.secret`; empty without one (Forgejo then signs with an empty key).
    secret: String,
    /// RFC 3339, whole seconds, as Forgejo's `created_at` and `updated_at`.
    created: String,
}

impl std::fmt::Debug for HookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of any debug output of the state.
        f.debug_struct("HookRecord")
            .field("hook", &self.hook)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// What the API's `POST …/hooks` asks for.
#[derive(Clone)]
pub(super) struct NewHook {
    /// The organization or repository of the path.
    pub scope: Scope,
    /// `type`.
    pub kind: String,
    /// `config.url`.
    pub url: String,
    /// `config.content_type`.
    pub content_type: String,
    /// `config.secret`, empty if none.
    pub secret: String,
    /// `events`, lowercased (`push` if none).
    pub events: Vec<String>,
    /// `active` (false if absent, as in Forgejo).
    pub active: bool,
}

/// A delivery ready to send: its exact bytes and headers, and the attempts it fills.
#[derive(Debug, Clone)]
struct Outgoing {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    delay: Option<Duration>,
    /// What each attempt records before it is answered.
    record: Delivery,
    /// Indexes in the delivery log, one per attempt (two under `Duplicate`).
    attempts: Vec<usize>,
}

/// The delivery log, shared with the dispatcher that fills in the answers.
type Log = Arc<Mutex<Vec<Delivery>>>;

fn lock_log(log: &Mutex<Vec<Delivery>>) -> MutexGuard<'_, Vec<Delivery>> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The hooks, the delivery log, the current fault and the queue to the dispatcher.
#[derive(Debug)]
pub(super) struct Webhooks {
    hooks: BTreeMap<i64, HookRecord>,
    next_id: i64,
    fault: WebhookFault,
    log: Log,
    last: Option<Outgoing>,
    queue: mpsc::UnboundedSender<Outgoing>,
}

impl Webhooks {
    /// No hooks yet, and the dispatcher that will send their deliveries once spawned.
    pub fn new() -> (Self, Dispatcher) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let log = Log::default();
        let webhooks = Self {
            hooks: BTreeMap::new(),
            next_id: 1,
            fault: WebhookFault::None,
            log: log.clone(),
            last: None,
            queue,
        };
        (webhooks, Dispatcher::new(receiver, log))
    }

    /// Adds a hook; returns its API JSON.
    pub fn create(&mut self, new: NewHook) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let now = jiff::Timestamp::now().as_second();
        let created = jiff::Timestamp::from_second(now)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let record = HookRecord {
            hook: Webhook {
                id,
                scope: new.scope,
                kind: new.kind,
                url: new.url,
                content_type: new.content_type,
                events: new.events,
                active: new.active,
            },
            secret: new.secret,
            created,
        };
        let json = api_json(&record);
        self.hooks.insert(id, record);
        json
    }

    /// The API JSON of the hooks of `scope`, by id.
    pub fn list(&self, scope: &Scope) -> Vec<Value> {
        self.hooks
            .values()
            .filter(|h| same_scope(&h.hook.scope, scope))
            .map(api_json)
            .collect()
    }

    /// The API JSON of hook `id` of `scope`.
    pub fn get(&self, scope: &Scope, id: i64) -> Option<Value> {
        self.hooks
            .get(&id)
            .filter(|h| same_scope(&h.hook.scope, scope))
            .map(api_json)
    }

    /// Removes hook `id` of `scope`; false if it has no such hook.
    pub fn delete(&mut self, scope: &Scope, id: i64) -> bool {
        if self.get(scope, id).is_none() {
            return false;
        }
        self.hooks.remove(&id).is_some()
    }

    /// Every hook, by id, without secrets.
    pub fn hooks(&self) -> Vec<Webhook> {
        self.hooks.values().map(|h| h.hook.clone()).collect()
    }

    /// Every delivery attempt so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock_log(&self.log).clone()
    }

    /// Sets the fault the next deliveries get.
    pub fn set_fault(&mut self, fault: WebhookFault) {
        self.fault = fault;
    }

    /// Sends the last delivery again, byte for byte, whatever the fault; its delivery id.
    pub fn redeliver_last(&mut self) -> Option<String> {
        let mut outgoing = self.last.clone()?;
        outgoing.delay = None;
        let id = outgoing.record.delivery.clone();
        self.enqueue(outgoing, 1);
        Some(id)
    }

    /// Delivers a `workflow_job` event of a job of `repository` (`owner/name`) to every
    /// active hook that asked for `event` and whose organization or repository it is in.
    pub fn job_event(
        &mut self,
        event: &str,
        action: &str,
        job_id: i64,
        repository: &str,
        payload: &Value,
    ) {
        let (owner, repo) = repository.split_once('/').unwrap_or((repository, ""));
        let targets: Vec<HookRecord> = self
            .hooks
            .values()
            .filter(|h| h.hook.active && h.hook.events.iter().any(|e| e == event))
            .filter(|h| covers(&h.hook.scope, owner, repo))
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        // Forgejo stores the payload indented (`json.MarshalIndent`); receivers must verify
        // the bytes as sent, not a re-encoding.
        let json = serde_json::to_vec_pretty(payload).unwrap_or_default();
        for hook in targets {
            let record = Delivery {
                hook_id: hook.hook.id,
                event: event.to_owned(),
                action: action.to_owned(),
                job_id,
                delivery: random_uuid(),
                status: None,
                error: None,
            };
            let outgoing = prepare(&hook, &json, record);
            self.last = Some(outgoing.clone());
            match self.fault {
                WebhookFault::None => self.enqueue(outgoing, 1),
                WebhookFault::Delay(delay) => self.enqueue(
                    Outgoing {
                        delay: Some(delay),
                        ..outgoing
                    },
                    1,
                ),
                WebhookFault::Duplicate => self.enqueue(outgoing, 2),
                WebhookFault::Drop => lock_log(&self.log).push(Delivery {
                    error: Some(DROPPED.into()),
                    ..outgoing.record
                }),
            }
        }
    }

    /// Records `copies` attempts of `outgoing` and hands it to the dispatcher.
    fn enqueue(&mut self, mut outgoing: Outgoing, copies: usize) {
        let mut log = lock_log(&self.log);
        outgoing.attempts = (log.len()..log.len() + copies).collect();
        log.extend(std::iter::repeat_n(outgoing.record.clone(), copies));
        let attempts = outgoing.attempts.clone();
        if self.queue.send(outgoing).is_err() {
            // The dispatcher ends only with the stand-in.
            for index in attempts {
                if let Some(record) = log.get_mut(index) {
                    record.error = Some("the stand-in has stopped".into());
                }
            }
        }
    }
}

/// The request Forgejo's `deliver.go` makes for `hook`: body, content type, signatures.
fn prepare(hook: &HookRecord, json: &[u8], record: Delivery) -> Outgoing {
    let (content_type, body) = if hook.hook.content_type == "form" {
        let json = String::from_utf8_lossy(json);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &json)
            .finish();
        ("application/x-www-form-urlencoded", Bytes::from(form))
    } else {
        ("application/json", Bytes::copy_from_slice(json))
    };
    let signature = sign(&hook.secret, &body);
    let event = record.event.clone();
    let delivery = record.delivery.clone();
    let headers = vec![
        ("content-type", content_type.to_owned()),
        ("x-forgejo-delivery", delivery.clone()),
        ("x-forgejo-event", event.clone()),
        ("x-forgejo-event-type", event.clone()),
        ("x-forgejo-signature", signature.clone()),
        ("x-gitea-delivery", delivery),
        ("x-gitea-event", event.clone()),
        ("x-gitea-event-type", event),
        ("x-gitea-signature", signature.clone()),
        ("x-hub-signature-256", format!("sha256={signature}")),
    ];
    Outgoing {
        url: hook.hook.url.clone(),
        headers,
        body,
        delay: None,
        record,
        attempts: Vec::new(),
    }
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Forgejo's hook JSON (`api.Hook`); `config` never holds the secret.
fn api_json(record: &HookRecord) -> Value {
    let hook = &record.hook;
    json!({
        "id": hook.id,
        "type": hook.kind,
        "branch_filter": "",
        "config": { "url": hook.url, "content_type": hook.content_type },
        "events": hook.events,
        "authorization_header": "",
        "active": hook.active,
        "created_at": record.created,
        "updated_at": record.created,
    })
}

/// Whether two hook scopes name the same organization or repository (names ignore case, as in Forgejo).
fn same_scope(a: &Scope, b: &Scope) -> bool {
    match (a, b) {
        (Scope::Organization(a), Scope::Organization(b)) => a.eq_ignore_ascii_case(b),
        (
            Scope::Repository { owner, repo },
            Scope::Repository {
                owner: other_owner,
                repo: other_repo,
            },
        ) => owner.eq_ignore_ascii_case(other_owner) && repo.eq_ignore_ascii_case(other_repo),
        _ => false,
    }
}

/// Whether a hook of `scope` hears of jobs of `owner/repo`.
fn covers(scope: &Scope, owner: &str, repo: &str) -> bool {
    same_scope(scope, &Scope::Organization(owner.to_owned()))
        || same_scope(
            scope,
            &Scope::Repository {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256_in_lowercase_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn org_hooks_cover_their_owners_jobs_and_repo_hooks_their_repositorys() {
        let org = Scope::Organization("Acme".into());
        let repo = Scope::repository("acme/App").unwrap();
        assert!(covers(&org, "acme", "anything"));
        assert!(!covers(&org, "other", "app"));
        assert!(covers(&repo, "ACME", "app"));
        assert!(!covers(&repo, "acme", "lib"));
    }
}
