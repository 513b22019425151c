//! Listings of owned resources (`GET files`, `cachedContents`, `batches`, `…/operations`),
//! answered by the gateway itself: it pages through Google's listing and keeps the org's own
//! entries. Filtering a single page as it passes would leave pages empty, or all empty but the
//! last, for an org among many, and Google's Python SDK fails on an empty page it fetched
//! (`IndexError` in its pager). So a page the org receives holds at least one entry unless there
//! are none left, and its `nextPageToken` points at a page that holds some of the org's, or is
//! absent when none remain.
//!
//! Network I/O to the upstream only (the same host, credential and CA roots as the proxy).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::resources::key_of_path;
use crate::upstream::Upstream;

/// Google pages fetched for one listing request at most (the answer then carries the token to
/// go on from, which may lead to a page without the org's entries).
const MAX_PAGES: usize = 200;
/// Entries per Google page when the client sets no `pageSize` (every listing's maximum is at
/// least this; Google's defaults are 10 to 50), so an org among many needs fewer pages.
const INNER_PAGE_SIZE: &str = "pageSize=100";
/// Time for one listing request in all (its pages one after another).
const DEADLINE: Duration = Duration::from_secs(30);
/// Largest page read.
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why the lister could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ListerError {
    /// The CA file cannot be read or holds no usable certificate.
    #[error("cannot use the upstream CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the listing client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What a listing request gets.
#[derive(Debug)]
pub enum Listed {
    /// The org's entries (JSON) and how many of others' were left out.
    Page {
        /// The response body.
        body: Vec<u8>,
        /// Entries of other orgs (or unreadable ones) left out.
        hidden: u64,
    },
    /// Google answered with an error: passed on as it is.
    Upstream {
        /// Its status.
        status: u16,
        /// Its body.
        body: bytes::Bytes,
        /// Its `Retry-After`, when it sent a valid one (seconds or an HTTP date).
        retry_after: Option<String>,
    },
}

/// Fetches listing pages from the upstream.
pub struct Lister {
    client: reqwest::Client,
}

struct Page {
    object: Map<String, Value>,
    next: Option<String>,
}

impl Lister {
    /// One client for the process, with the proxy's timeouts and CA roots.
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        ca_file: Option<&str>,
    ) -> Result<Lister, ListerError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(connect_timeout + read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let fail = |reason: String| ListerError::CaFile {
                path: path.to_owned(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Lister { client: b.build()? })
    }

    /// The org's entries of the listing at `path` (`query` as the client sent it, without the
    /// gateway key), as described in the module documentation.
    pub async fn list(
        &self,
        up: &Upstream,
        path: &str,
        query: Option<&str>,
        owns: impl Fn(&str) -> bool,
    ) -> Result<Listed, GatewayError> {
        let mut base_query = Vec::new();
        let mut token = None;
        let mut sized = false;
        for p in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match p.split_once('=').map_or(p, |(k, _)| k) {
                "key" => {}
                "pageToken" | "page_token" => {
                    token = p
                        .split_once('=')
                        .map(|(_, v)| v.to_owned())
                        .filter(|t| !t.is_empty())
                }
                k => {
                    sized |= k == "pageSize" || k == "page_size";
                    base_query.push(p);
                }
            }
        }
        if !sized {
            base_query.push(INNER_PAGE_SIZE);
        }
        let base_query = base_query.join("&");
        let started = std::time::Instant::now();
        let mut items: Map<String, Value> = Map::new();
        let mut first: Option<Map<String, Value>> = None;
        let mut hidden = 0u64;
        let mut next = None;
        for fetched in 1..=MAX_PAGES {
            let have = items
                .values()
                .any(|v| v.as_array().is_some_and(|a| !a.is_empty()));
            let page = match self.fetch(up, path, &base_query, token.as_deref()).await {
                Ok(Ok(p)) => p,
                // Google failed on a page after some of the org's entries were found: those are
                // answered, and the client goes on from the page that failed.
                Ok(Err(_)) | Err(_) if have => {
                    next = token;
                    break;
                }
                Ok(Err(passed_on)) => return Ok(passed_on),
                Err(e) => return Err(e),
            };
            let (owned, left_out) = owned_entries(&page.object, &owns);
            let found = owned
                .values()
                .any(|v| v.as_array().is_some_and(|a| !a.is_empty()));
            if found && have {
                // This page starts the org's next page: the client goes on from here (and its
                // entries are counted then).
                next = token;
                break;
            }
            hidden += left_out;
            for (field, v) in owned {
                if let (Some(Value::Array(all)), Value::Array(new)) = (items.get_mut(&field), &v) {
                    all.extend(new.iter().cloned());
                } else {
                    items.insert(field, v);
                }
            }
            first.get_or_insert(page.object);
            match page.next {
                None => break,
                Some(t) if fetched == MAX_PAGES || started.elapsed() > DEADLINE => {
                    next = Some(t);
                    break;
                }
                Some(t) => token = Some(t),
            }
        }
        let mut out = first.unwrap_or_default();
        out.remove("nextPageToken");
        for (field, v) in items {
            out.insert(field, v);
        }
        if let Some(t) = next {
            out.insert("nextPageToken".into(), Value::String(decode_token(&t)));
        }
        Ok(Listed::Page {
            body: serde_json::to_vec(&Value::Object(out)).unwrap_or_else(|_| b"{}".to_vec()),
            hidden,
        })
    }

    /// One page; `Ok(Err(_))` when Google answered with an error (passed on).
    async fn fetch(
        &self,
        up: &Upstream,
        path: &str,
        base_query: &str,
        token: Option<&str>,
    ) -> Result<Result<Page, Listed>, GatewayError> {
        let provider = up.provider.as_str();
        let mut url = format!("{}{}{path}", up.origin(), up.base_path);
        let mut sep = '?';
        if !base_query.is_empty() {
            url.push(sep);
            url.push_str(base_query);
            sep = '&';
        }
        if let Some(t) = token {
            url.push(sep);
            url.push_str("pageToken=");
            url.push_str(t); // as the client (or Google, encoded below) wrote it
        }
        let mut req = self.client.get(&url).header("accept-encoding", "identity");
        if let Some((name, value)) = up.credential_header() {
            req = req.header(*name, value.clone());
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                GatewayError::UpstreamTimeout { provider }
            } else {
                GatewayError::UpstreamUnreachable { provider }
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 64)
            .map(str::to_owned);
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| GatewayError::UpstreamUnreachable { provider })?
        {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(GatewayError::Internal);
            }
            body.extend_from_slice(&chunk);
        }
        if !(200..300).contains(&status) {
            return Ok(Err(Listed::Upstream {
                status,
                body: body.into(),
                retry_after,
            }));
        }
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&body) else {
            // Not a JSON object: nothing of anyone's can be shown from it.
            return Ok(Ok(Page {
                object: Map::new(),
                next: None,
            }));
        };
        let next = object
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(encode_token);
        Ok(Ok(Page { object, next }))
    }
}

/// A page token from Google, encoded for a query string.
fn encode_token(t: &str) -> String {
    url::form_urlencoded::byte_serialize(t.as_bytes()).collect()
}

/// A token as the client should see it (tokens are kept query-encoded internally).
fn decode_token(t: &str) -> String {
    url::form_urlencoded::parse(format!("t={t}").as_bytes())
        .next()
        .map_or_else(|| t.to_owned(), |(_, v)| v.into_owned())
}

/// The arrays of entries at the top of a listing, each kept to the entries whose `name` the
/// org owns (an entry without its name, as a `fields=` partial response gives, cannot be
/// checked and is left out), and how many were left out.
pub fn owned_entries(
    object: &Map<String, Value>,
    owns: impl Fn(&str) -> bool,
) -> (Map<String, Value>, u64) {
    let mut out = Map::new();
    let mut hidden = 0;
    for (field, v) in object {
        let Some(entries) = v.as_array() else {
            continue;
        };
        let kept: Vec<Value> = entries
            .iter()
            .filter(|e| {
                let own = e
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(key_of_path)
                    .is_some_and(|k| owns(&k));
                hidden += u64::from(!own);
                own
            })
            .cloned()
            .collect();
        out.insert(field.clone(), Value::Array(kept));
    }
    (out, hidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_by_owner_and_the_rest_counted() {
        let page: Value = serde_json::from_str(
            r#"{"files": [{"name": "files/a", "sizeBytes": "1"}, {"name": "files/b"}, {"uri": "https://generativelanguage.googleapis.com/v1beta/files/c"}],
                "nextPageToken": "t"}"#,
        )
        .unwrap();
        let (kept, hidden) = owned_entries(page.as_object().unwrap(), |r| r != "files/b");
        // files/c has no name (a `fields=` partial response): it cannot be checked.
        assert_eq!(
            kept["files"],
            serde_json::json!([{"name": "files/a", "sizeBytes": "1"}])
        );
        assert_eq!(hidden, 2);
        assert!(!kept.contains_key("nextPageToken"));
        // Vertex names carry their project.
        let page: Value = serde_json::from_str(
            r#"{"cachedContents": [{"name": "projects/p/locations/l/cachedContents/c1"}]}"#,
        )
        .unwrap();
        let (kept, _) = owned_entries(page.as_object().unwrap(), |r| r == "cachedContents/c1");
        assert_eq!(kept["cachedContents"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn page_tokens_survive_the_query_string() {
        let raw = "Cg4K/Dx+a b=&c==";
        assert_eq!(decode_token(&encode_token(raw)), raw);
    }
}
