//! `…/orgs/{org}/hooks` and `…/repos/{owner}/{repo}/hooks`: create, list, get and delete
//! webhooks, with the checks and messages of Forgejo's `routers/api/v1/utils/hook.go`.

use super::super::webhooks::NewHook;
use super::*;

/// The hook types whose payload the stand-in sends; Forgejo's others are chat formats.
const HOOK_TYPES: [&str; 2] = ["forgejo", "gitea"];

/// What a recorded request body shows instead of a hook's secret.
const REDACTED: &str = "[redacted]";

/// The hooks collection a path names, with what remains after `…/hooks`.
pub(super) fn parse_hooks_path(segments: &[String]) -> Option<(Scope, &[String])> {
    let strs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["orgs", org, "hooks"] | ["orgs", org, "hooks", _] => {
            Some((Scope::Organization((*org).to_owned()), &segments[3..]))
        }
        ["repos", owner, repo, "hooks"] | ["repos", owner, repo, "hooks", _] => Some((
            Scope::Repository {
                owner: (*owner).to_owned(),
                repo: (*repo).to_owned(),
            },
            &segments[4..],
        )),
        _ => None,
    }
}

/// Serves a hooks request whose token and owner were checked.
pub(super) fn serve(
    state: &mut State,
    method: &Method,
    scope: &Scope,
    rest: &[&str],
    body: &[u8],
) -> Reply {
    let id = |text: &str| text.parse::<i64>().unwrap_or(0);
    match (method, rest) {
        (&Method::GET, []) => {
            let hooks = state.webhooks.list(scope);
            Reply {
                status: StatusCode::OK,
                total_count: Some(hooks.len()),
                json: Some(Value::Array(hooks)),
            }
        }
        (&Method::POST, []) => create(state, scope, body),
        (&Method::GET, [hook]) => match state.webhooks.get(scope, id(hook)) {
            Some(json) => Reply::json(StatusCode::OK, json),
            None => not_found(state),
        },
        (&Method::DELETE, [hook]) => {
            if state.webhooks.delete(scope, id(hook)) {
                Reply::no_content()
            } else {
                not_found(state)
            }
        }
        _ => method_not_allowed(state),
    }
}

/// `POST …/hooks`: 201 with the hook, or 422 with Forgejo's message for the first problem.
fn create(state: &mut State, scope: &Scope, body: &[u8]) -> Reply {
    let unprocessable =
        |state: &State, message: &str| api_error(state, StatusCode::UNPROCESSABLE_ENTITY, message);
    let Ok(Value::Object(options)) = serde_json::from_slice::<Value>(body) else {
        return unprocessable(state, "invalid JSON body");
    };
    let kind = options
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !HOOK_TYPES.contains(&kind) {
        return unprocessable(state, &format!("Invalid hook type: {kind}"));
    }
    let config = options.get("config").and_then(Value::as_object);
    let option = |name: &str| config.and_then(|c| c.get(name)).and_then(Value::as_str);
    let (Some(url), Some(content_type)) = (option("url"), option("content_type")) else {
        let missing = if option("url").is_none() {
            "url"
        } else {
            "content_type"
        };
        return unprocessable(state, &format!("Missing config option: {missing}"));
    };
    if !matches!(content_type, "json" | "form") {
        return unprocessable(state, "Invalid content type");
    }
    let valid_url = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !valid_url {
        return unprocessable(state, "Invalid url");
    }
    let mut events: Vec<String> = options
        .get("events")
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    if events.is_empty() {
        // Forgejo's default when no event is chosen.
        events.push("push".into());
    }
    let hook = NewHook {
        scope: scope.clone(),
        kind: kind.to_owned(),
        url: url.to_owned(),
        content_type: content_type.to_owned(),
        secret: option("secret").unwrap_or_default().to_owned(),
        events,
        active: options
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Reply::json(StatusCode::CREATED, state.webhooks.create(hook))
}

/// A request body as recorded: a hook's `config.secret` is replaced, as tokens are never kept.
pub(super) fn recorded_body(path: &str, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).into_owned();
    if !path.ends_with("/hooks") {
        return text;
    }
    let Ok(mut json) = serde_json::from_slice::<Value>(body) else {
        return text;
    };
    match json.pointer_mut("/config/secret") {
        Some(secret) => {
            *secret = Value::String(REDACTED.into());
            json.to_string()
        }
        None => text,
    }
}
