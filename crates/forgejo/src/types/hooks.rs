//! Webhooks (`modules/structs/hook.go`): a hook as Forgejo answers it, the one to create, and
//! where each scope keeps its hooks.
//!
//! Forgejo nests a hook's URL and content type in `config`, a map of strings; [`Hook`] lifts
//! them to fields. Forgejo never answers with a hook's secret, and [`NewHook`] never shows it.

use super::*;

/// A webhook as Forgejo lists it (`api.Hook`); its secret is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HookWire", into = "HookWire")]
pub struct Hook {
    /// The hook's id (for `delete_hook`).
    pub id: i64,
    /// The hook's `type`: `forgejo`, `gitea`, or a chat format (`slack`, `matrix`, …).
    pub kind: String,
    /// Where it delivers (`config.url`).
    pub url: String,
    /// `json` or `form` (`config.content_type`).
    pub content_type: String,
    /// The events it was created for, e.g. `workflow_job_waiting`.
    pub events: Vec<String>,
    /// Whether it delivers at all.
    pub active: bool,
}

/// The wire shape of `api.Hook`, with the fields [`Hook`] keeps.
#[derive(Serialize, Deserialize)]
struct HookWire {
    id: i64,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    config: HookConfigWire,
    #[serde(default, deserialize_with = "null_as_default")]
    events: Vec<String>,
    #[serde(default)]
    active: bool,
}

/// The keys of `config` a hook is told apart by; Forgejo adds others for some types.
#[derive(Default, Serialize, Deserialize)]
struct HookConfigWire {
    #[serde(default)]
    url: String,
    #[serde(default)]
    content_type: String,
}

impl From<HookWire> for Hook {
    fn from(wire: HookWire) -> Self {
        Hook {
            id: wire.id,
            kind: wire.kind,
            url: wire.config.url,
            content_type: wire.config.content_type,
            events: wire.events,
            active: wire.active,
        }
    }
}

impl From<Hook> for HookWire {
    fn from(hook: Hook) -> Self {
        HookWire {
            id: hook.id,
            kind: hook.kind,
            config: HookConfigWire {
                url: hook.url,
                content_type: hook.content_type,
            },
            events: hook.events,
            active: hook.active,
        }
    }
}

/// A webhook to create: an active `forgejo` hook delivering JSON, signed with `secret`.
///
/// `Debug` shows `secret: "***"`; there is no `Serialize`, so the secret reaches nothing
/// but the request that creates the hook.
#[derive(Clone, PartialEq, Eq)]
pub struct NewHook {
    /// Where Forgejo delivers (`http` or `https`).
    pub url: String,
    /// The HMAC-SHA256 key Forgejo signs each delivery with (`X-Forgejo-Signature`).
    pub secret: String,
    /// The events to deliver, e.g. `workflow_job_waiting` (at least one).
    pub events: Vec<String>,
}

impl fmt::Debug for NewHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewHook")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("events", &self.events)
            .finish()
    }
}

/// Appends `; or …` about Forgejo's switch that turns every webhook endpoint into a 403.
macro_rules! or_disabled {
    ($hint:literal) => {
        concat!(
            $hint,
            "; or the server disables webhooks ([security] DISABLE_WEBHOOKS)"
        )
    };
}

impl Scope {
    /// Path segments of this scope's hooks collection under `/api/v1`.
    ///
    /// [`Scope::User`] is the token's own user (`user/hooks`): Forgejo offers no path to
    /// another user's hooks. [`Scope::Instance`] holds system hooks (`admin/hooks`), which
    /// fire for every repository.
    pub(crate) fn hooks_segments(&self) -> Vec<&str> {
        match self {
            Scope::Repository { owner, repo } => vec!["repos", owner, repo, "hooks"],
            Scope::Organization(org) => vec!["orgs", org, "hooks"],
            Scope::User => vec!["user", "hooks"],
            Scope::Instance => vec!["admin", "hooks"],
        }
    }

    /// What a 403 on this scope's hooks usually means, naming the token scope needed.
    pub(crate) fn hooks_forbidden_hint(&self, write: bool) -> &'static str {
        match (self, write) {
            (Scope::Repository { .. }, false) => or_disabled!(
                "the token needs the read:repository scope and its user needs admin rights on the repository"
            ),
            (Scope::Repository { .. }, true) => or_disabled!(
                "the token needs the write:repository scope and its user needs admin rights on the repository"
            ),
            (Scope::Organization(_), false) => or_disabled!(
                "the token needs the read:organization scope and its user must be an owner of the organization"
            ),
            (Scope::Organization(_), true) => or_disabled!(
                "the token needs the write:organization scope and its user must be an owner of the organization"
            ),
            (Scope::User, false) => or_disabled!("the token needs the read:user scope"),
            (Scope::User, true) => or_disabled!("the token needs the write:user scope"),
            (Scope::Instance, false) => or_disabled!(
                "the token needs the read:admin scope and must belong to a site administrator"
            ),
            (Scope::Instance, true) => or_disabled!(
                "the token needs the write:admin scope and must belong to a site administrator"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_reads_forgejos_shape_and_writes_it_back() {
        let json = serde_json::json!({
            "id": 7,
            "type": "forgejo",
            "branch_filter": "",
            "config": {"url": "https://ops.example.com/hook", "content_type": "json", "http_method": "post"},
            "events": ["workflow_job_waiting", "workflow_job_success"],
            "authorization_header": "",
            "active": true,
            "created_at": "2025-01-02T03:04:05Z",
            "updated_at": "2025-01-02T03:04:05Z",
        });
        let hook: Hook = serde_json::from_value(json).unwrap();
        assert_eq!(
            hook,
            Hook {
                id: 7,
                kind: "forgejo".into(),
                url: "https://ops.example.com/hook".into(),
                content_type: "json".into(),
                events: vec!["workflow_job_waiting".into(), "workflow_job_success".into()],
                active: true,
            }
        );
        let back = serde_json::to_value(&hook).unwrap();
        assert_eq!(back["type"], "forgejo");
        assert_eq!(back["config"]["url"], "https://ops.example.com/hook");
        assert_eq!(serde_json::from_value::<Hook>(back).unwrap(), hook);
    }

    #[test]
    fn a_hook_without_config_or_events_reads_as_empty() {
        let hook: Hook =
            serde_json::from_str(r#"{"id":1,"type":"gitea","config":null,"events":null}"#).unwrap();
        assert_eq!((hook.url.as_str(), hook.content_type.as_str()), ("", ""));
        assert!(hook.events.is_empty());
        assert!(!hook.active);
        assert!(serde_json::from_str::<Hook>(r#"{"type":"forgejo"}"#).is_err());
    }

    #[test]
    fn new_hook_debug_hides_the_secret() {
        let hook = NewHook {
            url: "https://ops.example.com/hook".into(),
            secret: "hunter2-hook-secret".into(),
            events: vec!["workflow_job_waiting".into()],
        };
        for shown in [format!("{hook:?}"), format!("{hook:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***") && shown.contains("ops.example.com"));
        }
    }

    #[test]
    fn each_scope_keeps_hooks_at_its_own_path_and_names_its_token_scope() {
        let repo = Scope::repository("acme/app").unwrap();
        let org = Scope::Organization("acme".into());
        assert_eq!(repo.hooks_segments(), ["repos", "acme", "app", "hooks"]);
        assert_eq!(org.hooks_segments(), ["orgs", "acme", "hooks"]);
        assert_eq!(Scope::User.hooks_segments(), ["user", "hooks"]);
        assert_eq!(Scope::Instance.hooks_segments(), ["admin", "hooks"]);
        for scope in [repo, org, Scope::User, Scope::Instance] {
            for write in [false, true] {
                let hint = scope.hooks_forbidden_hint(write);
                assert!(hint.contains(scope.token_scope(write)), "{hint}");
                assert!(hint.contains("DISABLE_WEBHOOKS"), "{hint}");
            }
        }
    }
}
