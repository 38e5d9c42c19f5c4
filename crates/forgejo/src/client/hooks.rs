//! Webhooks of a scope (`…/hooks`): list, create and delete, so the operator can keep one
//! `workflow_job` hook per scope. There is no edit: Forgejo's `editHook` may leave the
//! `workflow_job` events as they were, so a hook that differs is deleted and created again.
//!
//! A hook's secret goes into the create request's body and nowhere else: errors never quote
//! a request or an answer, and [`NewHook`]'s `Debug` hides it.

use super::*;
use crate::{Hook, NewHook};

impl Client {
    /// `GET …/hooks`, following every page: the hooks of exactly this scope.
    ///
    /// Paths: `repos/{owner}/{repo}/hooks`, `orgs/{org}/hooks`, `user/hooks` (the token's own
    /// user; Forgejo has no path to another user's hooks) and `admin/hooks` (system hooks,
    /// which fire for every repository). A 403 ([`Error::Forbidden`]) names the token scope
    /// needed (`read:organization`, …).
    pub async fn list_hooks(&self, scope: &Scope) -> Result<Vec<Hook>> {
        self.list_pages(
            Operation::get("list_hooks", scope.hooks_forbidden_hint(false)),
            &scope.hooks_segments(),
            "hook",
            |hook: &Hook| hook.id,
        )
        .await
    }

    /// `POST …/hooks`: creates an active `forgejo` hook that delivers JSON signed with the secret.
    ///
    /// Refused before sending ([`Error::InvalidHook`]) without events (Forgejo would make a
    /// push hook), without a secret (deliveries could be forged), or without an http(s) URL.
    /// Forgejo drops event names it does not know: compare the answer's `events` with those
    /// asked for. A 403 ([`Error::Forbidden`]) names the token scope needed
    /// (`write:organization`, `write:repository`, `write:user`, `write:admin`). Retried only
    /// when the request cannot have reached Forgejo, or on 429, so no second hook is left.
    pub async fn create_hook(&self, scope: &Scope, hook: &NewHook) -> Result<Hook> {
        check_new_hook(hook)?;
        let body = serde_json::json!({
            "type": "forgejo",
            "active": true,
            "events": hook.events,
            "config": {
                "url": hook.url,
                "content_type": "json",
                "secret": hook.secret,
            },
        })
        .to_string();
        let call = self.call(
            Operation::post("create_hook", scope.hooks_forbidden_hint(true)),
            &scope.hooks_segments(),
            None,
            Some(Bytes::from(body)),
        )?;
        let answer = self.send(&call).await?;
        let created: Hook = self.decode(&call, &answer)?;
        if created.id <= 0 {
            return Err(self.invalid(&call, &answer, "the created hook has no id".into()));
        }
        Ok(created)
    }

    /// `DELETE …/hooks/{id}`; a hook that is already gone (404) is fine.
    pub async fn delete_hook(&self, scope: &Scope, id: i64) -> Result<()> {
        let id = id.to_string();
        let mut segments = scope.hooks_segments();
        segments.push(&id);
        let call = self.call(
            Operation::delete("delete_hook", scope.hooks_forbidden_hint(true)),
            &segments,
            None,
            None,
        )?;
        match self.send(&call).await {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Refuses what Forgejo would take but not as meant (no events, no secret), and a URL it would
/// refuse with a 422 whose message errors cannot keep.
fn check_new_hook(hook: &NewHook) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidHook { reason });
    if hook.events.is_empty() || hook.events.iter().any(|e| e.trim().is_empty()) {
        return invalid(
            "it has no events, or an empty one (Forgejo makes a hook without events a push hook)",
        );
    }
    if hook.secret.is_empty() {
        return invalid(
            "its secret is empty (Forgejo would sign deliveries with an empty key, so anyone could forge them)",
        );
    }
    let web = Url::parse(&hook.url).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty())
    });
    if !web {
        return invalid("its URL is not an absolute http(s) URL with a host");
    }
    Ok(())
}
