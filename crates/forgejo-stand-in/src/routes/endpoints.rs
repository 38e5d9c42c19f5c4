//! The REST endpoints the stand-in answers: job and runner listings (paged as Forgejo pages
//! them), runner registration, and the JSON of a runner.

use super::*;

/// `…/runners/jobs`: waiting and running jobs of the scope matching `labels`, newest first.
pub(super) fn list_jobs(state: &mut State, scope: &Scope, query: Option<&str>) -> Reply {
    let labels_param = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "labels")
            .map(|(_, v)| v.trim().to_owned())
    });
    let unfiltered = state.major >= 14;
    // v11–v13 split even a missing parameter, so `[""]` matches nothing.
    let labels: Vec<String> = match &labels_param {
        None if unfiltered => Vec::new(),
        None => vec![String::new()],
        Some(v) => v.split(',').map(str::to_owned).collect(),
    };
    let matches = |runs_on: &[String]| {
        if unfiltered && labels_param.is_none() {
            return true;
        }
        if unfiltered && labels.first().is_some_and(String::is_empty) && runs_on.is_empty() {
            return true;
        }
        it_runs_on(runs_on, &labels)
    };
    let (owner_id, repo_id) = state.scope_ids(scope);
    let with_attempts = state.major >= 15;
    let jobs: Vec<Value> = state
        .jobs
        .values()
        .rev()
        .filter(|job| matches!(job.status.as_str(), "waiting" | "running"))
        .filter(|job| {
            (owner_id == 0 || job.owner_id == owner_id) && (repo_id == 0 || job.repo_id == repo_id)
        })
        .filter(|job| matches(&job.runs_on))
        .map(|job| job.listing_json(with_attempts))
        .collect();
    // Forgejo encodes an empty (nil) Go slice as `null`.
    let json = if jobs.is_empty() {
        Value::Null
    } else {
        Value::Array(jobs)
    };
    Reply::json(StatusCode::OK, json)
}

/// A list request's `page` (from 1) and `limit` as Forgejo reads them: page 1 unless given,
/// 30 items unless given, never more than `MAX_RESPONSE_ITEMS`.
pub(super) fn page_and_limit(state: &State, query: Option<&str>) -> (usize, usize) {
    let (mut page, mut limit) = (0usize, 0usize);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "page" => page = value.parse().unwrap_or(0),
            "limit" => limit = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let max = state.config.max_page_size.max(1);
    let limit = if limit == 0 {
        30.min(max)
    } else {
        limit.min(max)
    };
    (page.max(1), limit)
}

/// `GET …/runners`: one page, with `x-total-count`.
pub(super) fn list_runners(state: &mut State, scope: &Scope, query: Option<&str>) -> Reply {
    let (page, limit) = page_and_limit(state, query);
    let (owner_id, repo_id) = state.scope_ids(scope);
    let all: Vec<Value> = state
        .runners
        .values()
        .filter(|r| r.owner_id == owner_id && r.repo_id == repo_id)
        .map(|r| runner_json(&r.to_api()))
        .collect();
    let total = all.len();
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    Reply {
        status: StatusCode::OK,
        json: Some(Value::Array(items)),
        total_count: Some(total),
    }
}

/// `POST …/runners`.
pub(super) fn register_runner(state: &mut State, scope: &Scope, body: &[u8]) -> Reply {
    let Ok(Value::Object(options)) = serde_json::from_slice::<Value>(body) else {
        return api_error(state, StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON body");
    };
    let text = |key: &str| {
        options
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = text("name");
    if name.is_empty() {
        return api_error(state, StatusCode::UNPROCESSABLE_ENTITY, "[Name]: Required");
    }
    let ephemeral = options
        .get("ephemeral")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (runner, token) = state.add_runner(scope, &name, &text("description"), ephemeral);
    Reply::json(
        StatusCode::CREATED,
        json!({ "id": runner.id, "uuid": runner.uuid, "token": token }),
    )
}

pub(super) fn find_runner(
    state: &mut State,
    scope: &Scope,
    id: &str,
) -> Option<super::super::state::RunnerRecord> {
    let id: i64 = id.parse().ok()?;
    let (owner_id, repo_id) = state.scope_ids(scope);
    state
        .runners
        .get(&id)
        .filter(|r| r.editable_from(owner_id, repo_id))
        .cloned()
}

/// Forgejo's `ActionRunner` JSON; `labels` is `null` until the runner connects.
pub(super) fn runner_json(runner: &forgejo::Runner) -> Value {
    json!({
        "id": runner.id,
        "uuid": runner.uuid,
        "owner_id": runner.owner_id.unwrap_or_default(),
        "repo_id": runner.repo_id.unwrap_or_default(),
        "name": runner.name,
        "status": runner.status,
        "version": runner.version.clone().unwrap_or_default(),
        "labels": null_if_empty(&runner.labels),
        "description": runner.description,
        "ephemeral": runner.ephemeral,
    })
}

pub(super) fn null_if_empty(items: &[String]) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        json!(items)
    }
}
