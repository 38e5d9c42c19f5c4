//! Following a paged Forgejo list (`?page=N&limit=M`) to its end, for runners and hooks
//! alike, without trusting the server to page at all.

use std::collections::HashSet;

use super::*;

impl Client {
    /// Every item of a paged list, each once (by `id_of`); `noun` names them in logs and errors.
    ///
    /// The list ends at an empty page, once `X-Total-Count` items are in, at a page shorter
    /// than the first (the server's page size), or at a page that adds no item not seen
    /// already: a server (or proxy) that ignores `page` answers the same page again, and what
    /// was read so far is returned instead of asking for page after page.
    pub(super) async fn list_pages<T, F>(
        &self,
        operation: Operation,
        segments: &[&str],
        noun: &'static str,
        id_of: F,
    ) -> Result<Vec<T>>
    where
        T: DeserializeOwned,
        F: Fn(&T) -> i64,
    {
        let mut items: Vec<T> = Vec::new();
        let mut seen = HashSet::new();
        // The server caps `limit` at its own page size; the first page shows it.
        let mut page_size = PAGE_SIZE;
        for page in 1..=MAX_PAGES {
            let query = format!("page={page}&limit={PAGE_SIZE}");
            let call = self.call(operation, segments, Some(query), None)?;
            let answer = self.send(&call).await?;
            let total = answer
                .headers
                .get("x-total-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let batch: Option<Vec<T>> = self.decode(&call, &answer)?;
            let batch = batch.unwrap_or_default();
            let batch_len = batch.len();
            if page == 1 {
                page_size = batch_len.min(PAGE_SIZE);
            }
            let before = items.len();
            for item in batch {
                if seen.insert(id_of(&item)) {
                    items.push(item);
                }
            }
            if batch_len == 0 || total.is_some_and(|total| items.len() >= total) {
                return Ok(items);
            }
            if items.len() == before {
                tracing::warn!(
                    endpoint = call.endpoint.name,
                    path = %call.endpoint.path,
                    page,
                    items = items.len(),
                    "Forgejo answered a {noun} page with {noun}s already seen (it ignores `page`); using what was read"
                );
                return Ok(items);
            }
            if page > 1 && batch_len < page_size {
                return Ok(items);
            }
        }
        let call = self.call(operation, segments, None, None)?;
        Err(Error::InvalidResponse {
            endpoint: call.endpoint,
            status: 200,
            detail: format!("the {noun} list did not end after {MAX_PAGES} pages"),
            answer: format!("{MAX_PAGES} pages of {noun}s"),
        })
    }
}
