//! Resumable uploads: the SDKs send an upload's chunks without an API key, so the session
//! Google opens is remembered as the org's, each chunk is checked against it (one at a time, in
//! order), and the upload URL Google returns is rewritten to point at the gateway.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Ctx, Proxy};
use crate::error::GatewayError;
use crate::identity::{self, Identity};
use crate::metering::RequestMeter;
use crate::route::{Operation, Route};

const UPLOAD_URL: &str = "x-goog-upload-url";
/// Upload sessions older than this are forgotten.
pub const UPLOAD_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// A resumable upload in progress.
#[derive(Debug)]
pub struct UploadSession {
    /// Who started it: its chunks are that org's.
    pub identity: Identity,
    /// When a chunk last came (sessions idle longer than [`UPLOAD_SESSION_TTL`] end).
    pub started: Instant,
    /// The body's scanner as of the last chunk Google accepted, so a reference split across
    /// two chunks is still seen.
    meter: Box<RequestMeter>,
    /// Bytes Google accepted so far: the next chunk must start here.
    accepted: u64,
    /// A chunk is on its way (chunks of one upload go one after another).
    busy: bool,
}

impl UploadSession {
    /// A session started now by `identity`.
    pub fn new(identity: Identity) -> UploadSession {
        UploadSession {
            identity,
            started: Instant::now(),
            meter: Box::default(),
            accepted: 0,
            busy: false,
        }
    }
}

/// Resumable uploads in progress, by Google's upload id, counted per org so that one org
/// cannot hold the gateway's memory with sessions it never finishes.
#[derive(Debug, Default)]
pub struct Uploads {
    sessions: DashMap<String, UploadSession>,
    per_org: DashMap<i64, usize>,
}

impl Uploads {
    /// Uploads one org may have in progress at once.
    pub const MAX_PER_ORG: usize = 1_000;

    /// Records a session Google started for `identity`'s org.
    pub fn start(&self, id: String, identity: Identity) {
        let org = identity.org_id;
        if let Some(old) = self.sessions.insert(id, UploadSession::new(identity)) {
            self.forget_one(old.identity.org_id);
        }
        *self.per_org.entry(org).or_default() += 1;
    }

    /// A session, to read or move on.
    pub fn get_mut(
        &self,
        id: &str,
    ) -> Option<dashmap::mapref::one::RefMut<'_, String, UploadSession>> {
        self.sessions.get_mut(id)
    }

    /// Ends a session (finished, cancelled or refused).
    pub fn end(&self, id: &str) {
        if let Some((_, s)) = self.sessions.remove(id) {
            self.forget_one(s.identity.org_id);
        }
    }

    /// Ends the sessions idle for longer than [`UPLOAD_SESSION_TTL`].
    pub fn prune(&self) {
        self.sessions.retain(|_, s| {
            let keep = s.started.elapsed() < UPLOAD_SESSION_TTL;
            if !keep {
                self.forget_one(s.identity.org_id);
            }
            keep
        });
    }

    /// Uploads `org` has in progress.
    pub fn in_progress(&self, org: i64) -> usize {
        self.per_org.get(&org).map_or(0, |n| *n)
    }

    fn forget_one(&self, org: i64) {
        if let Some(mut n) = self.per_org.get_mut(&org) {
            *n = n.saturating_sub(1);
        }
        self.per_org.remove_if(&org, |_, n| *n == 0);
    }
}

/// A chunk's place in its upload session.
#[derive(Debug)]
pub(super) struct UploadChunk {
    id: String,
    /// The scanner before this chunk, restored if Google does not accept it.
    before: Box<RequestMeter>,
    /// Where the chunk starts, and its length when the request says.
    offset: u64,
    length: Option<u64>,
}

impl Proxy {
    /// A chunk of a resumable upload: of a session this org started (with a key or without),
    /// starting where the bytes Google accepted end, one at a time; or refused.
    pub(super) fn upload_chunk(
        &self,
        req: &RequestHeader,
        org_id: i64,
    ) -> Result<(Option<RequestMeter>, Option<UploadChunk>), GatewayError> {
        let refuse = |what: &str| {
            self.metrics
                .resource_refusals
                .with_label_values(&["path"])
                .inc();
            GatewayError::NotOwned(what.to_owned())
        };
        let Some(id) = strict_upload_id(req.uri.query().unwrap_or(""))
            .map_err(|_| refuse("the upload session"))?
        else {
            // The start of an upload.
            if self.uploads.in_progress(org_id) >= Uploads::MAX_PER_ORG {
                return Err(GatewayError::TooManyUploads {
                    max: Uploads::MAX_PER_ORG,
                });
            }
            return Ok((None, None));
        };
        let Some(mut s) = self
            .uploads
            .get_mut(id)
            .filter(|s| s.identity.org_id == org_id && s.started.elapsed() < UPLOAD_SESSION_TTL)
        else {
            return Err(refuse("the upload session"));
        };
        let command = req
            .headers
            .get("x-goog-upload-command")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
            .unwrap_or_default();
        if command.contains("cancel") {
            drop(s);
            self.uploads.end(id);
            return Ok((None, None));
        }
        if !command.contains("upload") {
            return Ok((None, None)); // `query`: the offset Google holds, no body
        }
        let offset = req
            .headers
            .get("x-goog-upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if s.busy {
            return Err(GatewayError::Unsupported(
                "another chunk of this upload is on its way: send the chunks one after another",
            ));
        }
        if offset != s.accepted {
            return Err(GatewayError::Unsupported(
                "an upload chunk must start where the bytes Google accepted end (X-Goog-Upload-Offset; ask with X-Goog-Upload-Command: query)",
            ));
        }
        s.busy = true;
        s.started = Instant::now();
        let meter = (*s.meter).clone();
        let length = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunk = UploadChunk {
            id: id.to_owned(),
            before: std::mem::take(&mut s.meter),
            offset,
            length,
        };
        Ok((Some(meter), Some(chunk)))
    }

    /// At the end of a chunk's request: an accepted chunk moves the session on, one Google did
    /// not take leaves it where it was, one the gateway refused ends it (Google may hold part of
    /// it, and a resent remainder must not complete what was refused), the last one ends it.
    pub(super) fn end_upload_chunk(&self, ctx: &mut Ctx, status: u16) {
        let Some(chunk) = ctx.upload.take() else {
            return;
        };
        let ours = matches!(
            ctx.refused,
            Some(ref e) if !matches!(e, GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamTimeout { .. })
        );
        if ctx.upload_final || ours {
            self.uploads.end(&chunk.id);
            return;
        }
        let Some(mut s) = self.uploads.get_mut(&chunk.id) else {
            return;
        };
        s.busy = false;
        if (200..300).contains(&status) && ctx.refused.is_none() {
            s.accepted = chunk.offset + chunk.length.unwrap_or(ctx.body_metered as u64);
            *s.meter = std::mem::take(&mut ctx.request_meter);
            // Only the reader's state is needed between chunks, not the text it kept.
            s.meter.forget_text();
        } else {
            s.meter = chunk.before;
        }
    }

    /// Chunks of a resumable upload carry no key; the upload id Google issued identifies them.
    pub(super) fn upload_identity(&self, route: &Route, req: &RequestHeader) -> Option<Identity> {
        if route.operation != Operation::Upload
            || !matches!(
                identity::presented_key(&req.headers, req.uri.query()),
                Ok(None)
            )
        {
            return None;
        }
        let id = upload_id(req.uri.query()?)?;
        let entry = self.uploads.get_mut(id)?;
        (entry.started.elapsed() < UPLOAD_SESSION_TTL).then(|| entry.identity.clone())
    }

    pub(super) fn public_base(&self, req: &RequestHeader) -> Option<url::Url> {
        if let Some(u) = &self.public_url {
            return Some(u.clone());
        }
        let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
        url::Url::parse(&format!("http://{host}")).ok()
    }

    /// Google's answer to an upload request: whether the upload is complete, and a bodiless
    /// answer ends the chunk at once (no body filter follows, and the client's next chunk may
    /// come at once, on another connection).
    pub(super) fn upload_answered(&self, resp: &ResponseHeader, ctx: &mut Ctx) {
        if ctx.upload.is_some() {
            ctx.upload_final = resp
                .headers
                .get("x-goog-upload-status")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"final"));
            let bodiless = resp
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
            if bodiless {
                self.end_upload_chunk(ctx, ctx.status);
            }
        }
    }

    /// The upload URL Google gives is rewritten to point at the gateway, and its session is
    /// remembered as the org's.
    pub(super) fn rewrite_upload_url(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &Ctx,
    ) -> Result<()> {
        let Some(google_url) = resp
            .headers
            .get(UPLOAD_URL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let Some(base) = self.public_base(session.req_header()) else {
            return Ok(());
        };
        if let Some(ours) = gateway_upload_url(&google_url, &base) {
            if let (Some(id), Some(identity)) = (
                url::Url::parse(&ours)
                    .ok()
                    .and_then(|u| u.query().and_then(upload_id).map(str::to_owned)),
                &ctx.identity,
            ) {
                self.uploads.start(id, identity.clone());
            }
            resp.insert_header(UPLOAD_URL, ours)?;
        }
        Ok(())
    }
}

/// Points an `X-Goog-Upload-URL` at the gateway: same path and query, the gateway's origin.
fn gateway_upload_url(value: &str, public_base: &url::Url) -> Option<String> {
    let upstream = url::Url::parse(value).ok()?;
    let mut out = public_base.clone();
    let prefix = public_base.path().trim_end_matches('/');
    out.set_path(&format!("{prefix}{}", upstream.path()));
    out.set_query(upstream.query());
    Some(out.to_string())
}

/// The `upload_id` of an upload chunk's query, strictly: `Err` when the query names it more
/// than once or in an encoded form (`upload%5Fid=`), which Google might read as another
/// session than the one checked.
fn strict_upload_id(query: &str) -> Result<Option<&str>, AmbiguousUploadId> {
    let named = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "upload_id")
        .count();
    let plain: Vec<&str> = query
        .split('&')
        .filter_map(|p| p.strip_prefix("upload_id="))
        .collect();
    match (named, plain.as_slice()) {
        (0, []) => Ok(None),
        (1, [id]) if !id.is_empty() && !id.contains('%') && !id.contains('+') => Ok(Some(id)),
        _ => Err(AmbiguousUploadId),
    }
}

/// An upload chunk's query names its session more than once, or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upload session id is repeated or encoded")]
struct AmbiguousUploadId;

/// The upload session id of a resumable-upload URL's query.
fn upload_id(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("upload_id="))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn identity(org: i64) -> Identity {
        Identity {
            org_id: org,
            org_name: Arc::from("org"),
            key_id: 1,
            key_prefix: Arc::from("tg_x"),
            user: None,
            tool: None,
        }
    }

    #[test]
    fn upload_ids_are_read_strictly() {
        assert_eq!(
            strict_upload_id("upload_id=A1&upload_protocol=resumable"),
            Ok(Some("A1"))
        );
        assert_eq!(strict_upload_id("upload_protocol=resumable"), Ok(None));
        for odd in [
            "upload_id=A1&upload_id=B2",
            "upload%5Fid=B2",
            "upload_id=A1&upload%5fid=B2",
            "upload_id=A%31",
            "upload_id=",
        ] {
            assert_eq!(strict_upload_id(odd), Err(AmbiguousUploadId), "{odd}");
        }
    }

    #[test]
    fn upload_urls_point_at_the_gateway() {
        let base = url::Url::parse("http://127.0.0.1:8080").unwrap();
        let google = "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=ABC&upload_protocol=resumable";
        assert_eq!(
            gateway_upload_url(google, &base).unwrap(),
            "http://127.0.0.1:8080/upload/v1beta/files?upload_id=ABC&upload_protocol=resumable"
        );
        assert_eq!(
            upload_id("upload_id=ABC&upload_protocol=resumable"),
            Some("ABC")
        );
        assert_eq!(upload_id("upload_protocol=resumable"), None);
    }

    #[test]
    fn uploads_in_progress_are_counted_per_org() {
        let u = Uploads::default();
        u.start("a1".into(), identity(1));
        u.start("a2".into(), identity(1));
        u.start("b1".into(), identity(2));
        assert_eq!((u.in_progress(1), u.in_progress(2)), (2, 1));
        u.end("a1");
        u.end("a1"); // ending twice counts once
        u.end("unknown");
        assert_eq!((u.in_progress(1), u.in_progress(2)), (1, 1));
        u.prune(); // none idle yet
        assert_eq!(u.in_progress(1), 1);
        u.end("a2");
        u.end("b1");
        assert_eq!((u.in_progress(1), u.in_progress(2)), (0, 0));
        assert!(
            u.per_org.is_empty(),
            "no entry left for orgs without uploads"
        );
    }
}
