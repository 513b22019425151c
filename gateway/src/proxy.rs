//! The pingora `ProxyHttp` implementation. Hooks stay thin: they call into `route`, `identity`,
//! `upstream` and `error`, keep per-request state in [`Ctx`], and never do I/O besides the
//! upstream (no database, no files, no lock held across an await).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use store::Feature;

use crate::access_log::{AccessLine, AccessLog};
use crate::admission::{self, Enforcement};
use crate::error::GatewayError;
use crate::identity::{self, Identity};
use crate::ledger::Ledger;
use crate::limits::alerts::Alerts;
use crate::limits::counters::{Counters, Reservation};
use crate::limits::{Amounts, OrgLimits};
use crate::listing::{Listed, Lister};
use crate::metering::pricing::PriceTable;
use crate::metering::{self, RequestMeter, ResponseMeter};
use crate::metrics::{status_class, Metrics};
use crate::resources::{self, Access, Owners};
use crate::route::{self, Operation, Provider, Route};
use crate::snapshot::LiveConfig;
use crate::upstream::{self, Upstream};

/// The request id header, kept if the client sent one.
pub const REQUEST_ID: &str = "x-request-id";
const UPLOAD_URL: &str = "x-goog-upload-url";
/// Distinct unpriced models warned about (later ones are still counted and flagged, not logged).
const MAX_UNPRICED_WARNINGS: usize = 1_000;
/// Upload sessions older than this are forgotten.
pub const UPLOAD_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Shared state of the proxy.
pub struct Proxy {
    /// Keys, orgs, flags.
    pub live: Arc<LiveConfig>,
    /// The Developer API upstream.
    pub gemini: Arc<Upstream>,
    /// The Vertex upstream.
    pub vertex: Arc<Upstream>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Resumable uploads in progress (the SDKs send the chunks without an API key).
    pub uploads: Arc<Uploads>,
    /// Public base URL for rewritten upload URLs.
    pub public_url: Option<url::Url>,
    /// Where usage events go.
    pub ledger: Ledger,
    /// Prices (swapped on reload).
    pub prices: Arc<ArcSwap<PriceTable>>,
    /// Models already warned about having no price (warn once each).
    pub unpriced_warned: Arc<DashMap<String, ()>>,
    /// Usage counters per org and period.
    pub counters: Arc<Counters>,
    /// Limit alerts.
    pub alerts: Arc<Alerts>,
    /// Whether limits are enforced now.
    pub enforcement: Arc<Enforcement>,
    /// Output tokens reserved when a request sets no `maxOutputTokens`.
    pub default_output_tokens: i64,
    /// One line per request.
    pub access_log: Arc<AccessLog>,
    /// Which org owns each file, cached content, batch and operation.
    pub owners: Arc<Owners>,
    /// Answers listings with the org's own entries.
    pub lister: Arc<Lister>,
    /// Requests between their headers and their end (a graceful stop waits for none).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Bounds on what a client may send.
    pub clients: crate::settings::ClientLimits,
}

/// Counts a request in flight for as long as its context lives (to the end of its last write,
/// whether it finished, failed or was cut).
pub struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Largest creation or poll response read for the names it gives the org (Google's are a few
/// KB; a Vertex video inline in a poll, or a batch's inline output, may be far larger and
/// names nothing to claim beyond what its first bytes hold).
const MAX_HELD: usize = 1024 * 1024;

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
struct UploadChunk {
    id: String,
    /// The scanner before this chunk, restored if Google does not accept it.
    before: Box<RequestMeter>,
    /// Where the chunk starts, and its length when the request says.
    offset: u64,
    length: Option<u64>,
}

/// Per-request state.
pub struct Ctx {
    /// The gateway's own id, unique per request (the event's key).
    request_id: String,
    /// The `x-request-id` the client sent, echoed back; clients may reuse theirs.
    client_request_id: Option<String>,
    started: Instant,
    occurred_at: DateTime<Utc>,
    request_meter: RequestMeter,
    response_meter: ResponseMeter,
    body_preread: bool,
    /// Request body bytes the meter has seen, and bytes sent in the current upstream attempt: a
    /// retry replays the body from its start, and the meter must not count it twice.
    body_metered: usize,
    body_sent: usize,
    reservation: Option<Reservation>,
    /// The org's limits as admission saw them (warnings and alerts use the same).
    limits: OrgLimits,
    model_label: Option<Arc<str>>,
    route: Option<Route>,
    identity: Option<Identity>,
    refused: Option<GatewayError>,
    /// The org may not name a cached content (its `context_caching` flag is off): a body
    /// streamed past the pre-read that turns out to name one is cut before its end.
    cache_gated: bool,
    /// That refusal, found while the body was being forwarded (answered by `fail_to_proxy`).
    body_refused: Option<GatewayError>,
    upstream_started: Option<Instant>,
    upstream_header_ms: Option<u64>,
    upstream_done: Option<Instant>,
    /// How the request touches owned resources.
    access: Access,
    /// Body references already checked against the owners.
    /// A successful response that creates or reads owned resources, held (up to
    /// [`MAX_HELD`]) to read the names it gives the org.
    claims: Option<Vec<u8>>,
    /// A DELETE of an owned resource itself (a successful one frees its name).
    method_delete: bool,
    /// The resumable upload this request carries a chunk of.
    upload: Option<UploadChunk>,
    /// Google said the upload is complete (`x-goog-upload-status: final`).
    upload_final: bool,
    /// The status of the response passed on to the client (Google's, for an upload chunk).
    status: u16,
    /// The event, made and journaled as the response's last bytes passed (queued by `logging`).
    journaled: Option<(crate::ledger::Journaled, store::UsageEvent)>,
    _in_flight: InFlight,
}

impl Proxy {
    fn upstream(&self, p: Provider) -> &Upstream {
        match p {
            Provider::Gemini => &self.gemini,
            Provider::Vertex => &self.vertex,
        }
    }

    /// Decides whether a request may go upstream; the error says why not.
    fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
        let req = session.req_header();
        let path = req.uri.path();
        if let Some(why) = resources::unsupported_path(path) {
            return Err(GatewayError::Unsupported(why));
        }
        if resources::overrides_method(&req.headers) {
            return Err(GatewayError::Unsupported(
                "method override headers (X-HTTP-Method-Override and the like) are not accepted",
            ));
        }
        let route = route::classify(req.method.as_str(), path)
            .map_err(|_| GatewayError::NoRoute(path.to_owned()))?;
        if route.is_unknown_method() && !self.clients.allow_unknown_operations {
            let method = path.rsplit_once(':').map_or("", |(_, m)| m);
            return Err(GatewayError::UnknownMethod(
                method.chars().take(64).collect(),
            ));
        }
        if let Some(n) = admission::content_length(session) {
            if n as u64 > self.clients.max_body_bytes {
                return Err(GatewayError::BodyTooLarge {
                    max: self.clients.max_body_bytes,
                });
            }
        }
        // Known from here on, so refusals are logged, metered and labelled with their route.
        let route = &*ctx.route.insert(route);
        let snap = self.live.load();
        if !snap.is_loaded() {
            return Err(GatewayError::NotReady);
        }
        let identity = match self.upload_identity(route, req) {
            Some(id) => id,
            None => identity::identify(&snap, &req.headers, req.uri.query()).inspect_err(|e| {
                self.metrics
                    .auth_failures
                    .with_label_values(&[e.kind()])
                    .inc();
            })?,
        };
        let org_id = identity.org_id;
        ctx.identity = Some(identity);
        for f in route.required_features() {
            if !snap.feature_enabled(org_id, f) {
                self.metrics
                    .feature_refusals
                    .with_label_values(&[f.as_str()])
                    .inc();
                return Err(GatewayError::FeatureDisabled {
                    feature: f.as_str(),
                });
            }
        }
        if route.operation == Operation::Upload {
            let (meter, upload) = self.upload_chunk(req, org_id)?;
            if let Some(m) = meter {
                ctx.request_meter = m;
            }
            ctx.upload = upload;
        }
        ctx.access = resources::access(req.method.as_str(), path, route);
        // A successful DELETE of the resource itself (not of a document inside a store) frees
        // its name.
        ctx.method_delete = req.method == http::Method::DELETE
            && matches!(&ctx.access, Access::One(r) if path.trim_end_matches('/').ends_with(r.as_str()));
        if let Access::One(resource) = &ctx.access {
            if !self.owners.owns(org_id, resource) {
                self.metrics
                    .resource_refusals
                    .with_label_values(&["path"])
                    .inc();
                return Err(GatewayError::NotOwned(resource.clone()));
            }
        }
        let up = self.upstream(route.provider);
        if up.credential.is_none() {
            return Err(GatewayError::NoCredential {
                provider: route.provider.as_str(),
                env: up.credential_env.clone(),
            });
        }
        Ok(())
    }

    /// Request, latency and usage metrics of one finished request.
    fn record_metrics(&self, ctx: &Ctx, status: u16, e: &store::UsageEvent) {
        let m = &self.metrics;
        let provider = ctx.route.as_ref().map_or("none", |r| r.provider.as_str());
        let operation = ctx.route.as_ref().map_or("none", |r| r.operation.as_str());
        let model: &str = match (&ctx.model_label, &ctx.route) {
            (Some(l), _) => l,
            (None, Some(r)) if r.model.is_some() => "unknown",
            _ => "none",
        };
        m.requests
            .with_label_values(&[provider, model, operation, status_class(status)])
            .inc();
        let total = ctx.started.elapsed();
        let (request_seconds, upstream_seconds) =
            m.durations(ctx.route.as_ref().map(|r| r.provider));
        request_seconds.observe(total.as_secs_f64());
        if let Some(up) = ctx.upstream_started {
            // Upstream: contacted until its response ended; the gateway's own time is the rest.
            let upstream = ctx
                .upstream_done
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(up);
            upstream_seconds.observe(upstream.as_secs_f64());
            m.overhead_seconds
                .observe(total.saturating_sub(upstream).as_secs_f64());
        }
        let Some(id) = ctx.identity.as_ref().filter(|_| e.metered) else {
            return;
        };
        let (org, model) = (m.org_series(id.org_id, &id.org_name), m.model_series(model));
        let tokens = [
            e.input_tokens,
            e.output_tokens,
            e.thinking_tokens,
            e.cached_tokens,
        ];
        for (i, n) in tokens.into_iter().enumerate() {
            if n > 0 {
                org.tokens[i].inc_by(n as u64);
                model.tokens[i].inc_by(n as u64);
            }
        }
        let images = e.images as u64;
        if images > 0 {
            org.images.inc_by(images);
            model.images.inc_by(images);
        }
        if e.video_seconds > 0 {
            org.video_seconds.inc_by(e.video_seconds as u64);
            model.video_seconds.inc_by(e.video_seconds as u64);
        }
        if e.cost_micros > 0 {
            let dollars = e.cost_micros as f64 / 1_000_000.0;
            org.cost.inc_by(dollars);
            model.cost.inc_by(dollars);
        }
    }

    /// Checks the org's usage limits and reserves the request's expected usage. Metered
    /// requests only (counting tokens, polling, listing are never refused by a limit).
    async fn enforce_limits(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<(), GatewayError> {
        let (Some(route), Some(org)) =
            (ctx.route.as_ref(), ctx.identity.as_ref().map(|i| i.org_id))
        else {
            return Ok(());
        };
        if !route.is_metered() {
            return Ok(());
        }
        let (mut limits, loaded) = {
            let snap = self.live.load();
            (snap.limits(org), snap.is_loaded())
        };
        ctx.limits = limits;
        if self.enforcement.degraded(loaded) {
            self.enforcement.fail_open(if loaded {
                "counters_unavailable"
            } else {
                "limits_unavailable"
            });
            limits = OrgLimits::default(); // count the usage, refuse nothing
        }
        if admission::needs_body(&limits) && !ctx.body_preread {
            ctx.body_preread = admission::preread(session, &mut ctx.request_meter).await?;
        }
        let content_length = admission::content_length(session).unwrap_or(0);
        let prices = self.prices.load();
        // A body read only for the cached-content check is not estimated with the tokenizer
        // unless a limit needs it.
        let amounts = admission::estimate(
            route,
            &ctx.request_meter,
            ctx.body_preread && admission::needs_body(&limits),
            content_length,
            self.default_output_tokens,
            &prices,
        );
        ctx.reservation = Some(admission::reserve(
            &self.counters,
            org,
            &limits,
            amounts,
            &self.metrics,
        )?);
        Ok(())
    }

    /// Every check before forwarding, in order: route, identity and flags, a body naming a cached
    /// content, usage limits.
    async fn admit_all(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
        self.admit(session, ctx)?;
        self.gate_cached_content(session, ctx).await?;
        // A compressed body would hide its references from the checks below.
        if let Some(enc) = content_encoding(session.req_header()) {
            return Err(GatewayError::EncodedBody(enc));
        }
        // A body small enough to hold is read before anything goes upstream, so a refusal of
        // what it names sends nothing (larger ones are checked as they stream, and cut).
        if !ctx.body_preread {
            ctx.body_preread = admission::preread(session, &mut ctx.request_meter).await?;
        }
        self.check_references(ctx)?;
        self.enforce_limits(session, ctx).await?;
        self.check_references(ctx)
    }

    /// Every resource the body read so far references must be the org's own. A body read
    /// before forwarding is checked then; one that streams is checked chunk by chunk
    /// (`request_body_filter`), and cut before its end if it names another org's resource.
    fn check_references(&self, ctx: &mut Ctx) -> Result<(), GatewayError> {
        let Some(org) = ctx.identity.as_ref().map(|i| i.org_id) else {
            return Ok(());
        };
        let meter = &mut ctx.request_meter;
        let refusal = if meter.unreadable_reference {
            Some(GatewayError::NotOwned("the referenced resource".to_owned()))
        } else {
            meter
                .references
                .iter()
                .find(|r| !self.owners.owns(org, r))
                .map(|r| GatewayError::NotOwned(r.clone()))
        };
        // Checked: forgotten (an upload's session would otherwise keep every one).
        meter.references.clear();
        match refusal {
            Some(e) => {
                self.metrics
                    .resource_refusals
                    .with_label_values(&["body"])
                    .inc();
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// An org without `context_caching` may not name a cached content in a request body (the
    /// `cachedContents` paths themselves are refused by the flag table). A body small enough to
    /// pre-read is checked before anything is forwarded; a larger or chunked one is checked as it
    /// streams, and cut before its end if it names one (`request_body_filter`).
    async fn gate_cached_content(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<(), GatewayError> {
        let (Some(route), Some(id)) = (ctx.route.as_ref(), ctx.identity.as_ref()) else {
            return Ok(());
        };
        if route.operation == Operation::CachedContents
            || self
                .live
                .load()
                .feature_enabled(id.org_id, Feature::ContextCaching)
        {
            return Ok(());
        }
        ctx.cache_gated = true;
        // A compressed body cannot be checked as it passes: refused rather than let through.
        if content_encoding(session.req_header()).is_some() {
            return Err(self.cached_content_refusal());
        }
        if !ctx.body_preread {
            ctx.body_preread = admission::preread(session, &mut ctx.request_meter).await?;
        }
        if ctx.request_meter.names_cached_content {
            return Err(self.cached_content_refusal());
        }
        Ok(())
    }

    fn cached_content_refusal(&self) -> GatewayError {
        let feature = Feature::ContextCaching.as_str();
        self.metrics
            .feature_refusals
            .with_label_values(&[feature])
            .inc();
        GatewayError::FeatureDisabled { feature }
    }

    /// Answers a listing with the org's own entries (see `listing`).
    async fn serve_listing(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<(), GatewayError> {
        let (Some(route), Some(org)) = (&ctx.route, ctx.identity.as_ref().map(|i| i.org_id)) else {
            return Err(GatewayError::Internal);
        };
        let up = self.upstream(route.provider);
        let req = session.req_header();
        ctx.upstream_started = Some(Instant::now());
        let listed = self
            .lister
            .list(up, req.uri.path(), req.uri.query(), |r| {
                self.owners.owns(org, r)
            })
            .await;
        let now = chrono::Utc::now().timestamp();
        let mut headers = Vec::new();
        let (status, body) = match listed {
            Ok(Listed::Page { body, hidden }) => {
                if hidden > 0 {
                    self.metrics
                        .resource_refusals
                        .with_label_values(&["listing"])
                        .inc_by(hidden);
                }
                (200, Bytes::from(body))
            }
            Ok(Listed::Upstream {
                status,
                body,
                retry_after,
            }) => {
                // The client's SDK waits as long as Google asked before it tries again.
                headers.extend(retry_after.map(|v| ("retry-after", v)));
                (status, body)
            }
            Err(e) => {
                up.last_err.store(now, std::sync::atomic::Ordering::Relaxed);
                self.metrics
                    .upstream_errors
                    .with_label_values(&[up.provider.as_str(), e.kind()])
                    .inc();
                return Err(e);
            }
        };
        up.last_ok.store(now, std::sync::atomic::Ordering::Relaxed);
        ctx.upstream_header_ms = ctx.upstream_started.map(|t| t.elapsed().as_millis() as u64);
        ctx.upstream_done = Some(Instant::now());
        let reply = self.journal_answer(ctx, status);
        if let Err(e) = respond(session, status, body, &reply, &headers).await {
            tracing::debug!(error = %e, "cannot send the listing");
        }
        Ok(())
    }

    /// At the end of a successful response: the resources it named become the org's.
    fn finish_owned(&self, ctx: &mut Ctx) {
        let Some(org) = ctx.identity.as_ref().map(|i| i.org_id) else {
            return;
        };
        if let Some(held) = ctx.claims.take() {
            let names = resources::claimed_names(&held);
            match &ctx.access {
                // Google just made these for the org (a name chosen again after a delete
                // changes hands here).
                Access::Create => names.iter().for_each(|r| self.owners.take_over(r, org)),
                // Read from a resource the org owns: what a finished operation or batch made
                // becomes the org's, unless someone owns it already.
                Access::One(_) | Access::Poll => {
                    let own = match &ctx.access {
                        Access::One(own) => Some(own),
                        _ => None,
                    };
                    for r in names.iter().filter(|r| Some(*r) != own) {
                        if !self.owners.claim(r, org) {
                            tracing::warn!(resource = %r, "a response named a resource another org owns; left with its owner");
                        }
                    }
                }
                Access::Free | Access::List => {}
            }
            self.metrics.owned_resources.set(self.owners.len() as i64);
        }
    }

    /// A chunk of a resumable upload: of a session this org started (with a key or without),
    /// starting where the bytes Google accepted end, one at a time; or refused.
    fn upload_chunk(
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
        let Some(id) = upstream::strict_upload_id(req.uri.query().unwrap_or(""))
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
    fn end_upload_chunk(&self, ctx: &mut Ctx, status: u16) {
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
    fn upload_identity(&self, route: &Route, req: &RequestHeader) -> Option<Identity> {
        if route.operation != Operation::Upload
            || !matches!(
                identity::presented_key(&req.headers, req.uri.query()),
                Ok(None)
            )
        {
            return None;
        }
        let id = upstream::upload_id(req.uri.query()?)?;
        let entry = self.uploads.get_mut(id)?;
        (entry.started.elapsed() < UPLOAD_SESSION_TTL).then(|| entry.identity.clone())
    }

    fn public_base(&self, req: &RequestHeader) -> Option<url::Url> {
        if let Some(u) = &self.public_url {
            return Some(u.clone());
        }
        let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
        url::Url::parse(&format!("http://{host}")).ok()
    }
}

impl Proxy {
    /// The one usage event of a request: refused, failed or served.
    async fn usage_event(&self, ctx: &mut Ctx, status: u16) -> store::UsageEvent {
        let settled = match self.settle_now(ctx, status) {
            Some(s) => s,
            None => {
                // The exact tokenizer costs ~2 ms per 4 KB: keep it off the proxy's workers.
                let Some(route) = ctx.route.clone() else {
                    return self.event_of(ctx, status, metering::Settled::default());
                };
                let success = ctx.refused.is_none() && (200..300).contains(&status);
                let prices = self.prices.load_full();
                let (rq, rs) = (
                    std::mem::take(&mut ctx.request_meter),
                    std::mem::take(&mut ctx.response_meter),
                );
                tokio::task::spawn_blocking(move || {
                    metering::settle(&route, success, &rq, &rs, &prices)
                })
                .await
                .unwrap_or_default()
            }
        };
        self.note_unpriced(ctx, &settled);
        self.event_of(ctx, status, settled)
    }

    /// Makes and journals the event of an answer the gateway writes itself, before it goes
    /// out (a crash once it is out cannot lose it; `logging` queues it). Returns the reply id
    /// (the event takes the request's own).
    fn journal_answer(&self, ctx: &mut Ctx, status: u16) -> String {
        let reply = ctx.reply_id().to_owned();
        ctx.status = status;
        if let Some(settled) = self.settle_now(ctx, status) {
            self.note_unpriced(ctx, &settled);
            let event = self.event_of(ctx, status, settled);
            ctx.journaled = Some((self.ledger.journal(&event), event));
        }
        reply
    }

    /// Answers with the gateway's own error: refused from here on (whether or not the client
    /// is still there to read why), its event journaled first.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        e: GatewayError,
        headers: &[(&'static str, String)],
    ) -> Result<()> {
        let (status, body) = (e.status(), e.body());
        ctx.refused = Some(e);
        let reply = self.journal_answer(ctx, status);
        respond(session, status, body, &reply, headers).await
    }

    /// The event's settlement when it needs no exact token count (else `None`).
    fn settle_now(&self, ctx: &Ctx, status: u16) -> Option<metering::Settled> {
        let Some(route) = &ctx.route else {
            return Some(metering::Settled {
                priced: true,
                ..Default::default()
            });
        };
        if metering::needs_exact_count(route, &ctx.request_meter, &ctx.response_meter) {
            return None;
        }
        let success = ctx.refused.is_none() && (200..300).contains(&status);
        Some(metering::settle(
            route,
            success,
            &ctx.request_meter,
            &ctx.response_meter,
            &self.prices.load(),
        ))
    }

    fn note_unpriced(&self, ctx: &Ctx, settled: &metering::Settled) {
        if settled.priced {
            return;
        }
        self.metrics.unpriced_events.inc();
        let model = ctx
            .route
            .as_ref()
            .and_then(|r| r.model.as_deref())
            .unwrap_or("");
        // Warn once per model; the set is capped so made-up names cannot grow it forever.
        if self.unpriced_warned.len() < MAX_UNPRICED_WARNINGS
            && !self.unpriced_warned.contains_key(model)
        {
            self.unpriced_warned.insert(model.to_owned(), ());
            tracing::warn!(model, "no price for this model: billed with the fallback price (add it to the price file)");
        }
    }

    /// The event from its settlement and the request's state.
    fn event_of(
        &self,
        ctx: &mut Ctx,
        status: u16,
        settled: metering::Settled,
    ) -> store::UsageEvent {
        ctx.model_label = settled.model_label.clone();
        let t = &settled.metered.tokens;
        let id = ctx.identity.as_ref();
        store::UsageEvent {
            // The last use of the id on the request's path (logging reads it from the event).
            request_id: std::mem::take(&mut ctx.request_id),
            client_request_id: ctx.client_request_id.clone(),
            occurred_at: ctx.occurred_at,
            org_id: id.map(|i| i.org_id),
            key_id: id.map(|i| i.key_id),
            user_ref: id.and_then(|i| i.user.clone()),
            tool: id.and_then(|i| i.tool.clone()),
            provider: ctx
                .route
                .as_ref()
                .map_or("none", |r| r.provider.as_str())
                .to_owned(),
            model: ctx
                .route
                .as_ref()
                .and_then(|r| r.model.clone())
                .unwrap_or_default(),
            operation: ctx
                .route
                .as_ref()
                .map_or("none", |r| r.operation.as_str())
                .to_owned(),
            status: i32::from(status),
            metered: ctx.refused.is_none()
                && (settled.usage_reported || ctx.route.as_ref().is_some_and(Route::is_metered)),
            streamed: ctx
                .route
                .as_ref()
                .is_some_and(|r| r.operation == Operation::StreamGenerateContent),
            input_tokens: t.input,
            output_tokens: t.output,
            thinking_tokens: t.thinking,
            cached_tokens: t.cached,
            tool_prompt_tokens: t.tool_prompt,
            total_tokens: t.total,
            input_audio_tokens: t.input_audio,
            output_image_tokens: t.output_image,
            images: settled.images,
            videos: settled.videos,
            video_seconds: settled.metered.video_seconds,
            cost_micros: settled.cost_micros,
            estimated: settled.estimated,
            priced: settled.priced,
            upstream_latency_ms: ctx.upstream_header_ms.map(|v| v as i64),
            total_latency_ms: ctx.started.elapsed().as_millis() as i64,
        }
    }
}

/// While the gateway stops, each answer says `Connection: close` and the connection ends
/// after it, so a kept-alive client does not send its next request into a closing socket.
fn close_if_stopping(session: &mut Session) {
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
}

/// Writes a complete gateway-made response and keeps the client connection reusable (unless
/// the gateway is stopping).
async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> Result<()> {
    close_if_stopping(session);
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "application/json; charset=UTF-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header(REQUEST_ID, request_id)?;
    for (k, v) in extra {
        resp.insert_header(*k, v.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// The refusal of a request head larger than the gateway accepts (pingora's own bounds are
/// 1 MiB and 256 headers, which would all be forwarded).
fn head_too_large(
    req: &RequestHeader,
    limits: &crate::settings::ClientLimits,
) -> Option<GatewayError> {
    if req.headers.len() > limits.max_headers {
        return Some(GatewayError::HeadersTooLarge {
            what: "headers",
            max: limits.max_headers,
        });
    }
    let mut size = req.uri.path_and_query().map_or(0, |p| p.as_str().len()) + 16;
    for (k, v) in &req.headers {
        size += k.as_str().len() + v.len() + 4;
    }
    (size > limits.max_header_bytes).then_some(GatewayError::HeadersTooLarge {
        what: "bytes",
        max: limits.max_header_bytes,
    })
}

/// The request's `Content-Encoding` unless it is absent or `identity` (shortened for messages).
fn content_encoding(req: &RequestHeader) -> Option<String> {
    let v = req.headers.get(http::header::CONTENT_ENCODING)?;
    let v = String::from_utf8_lossy(v.as_bytes()).trim().to_owned();
    (!v.is_empty() && !v.eq_ignore_ascii_case("identity")).then(|| v.chars().take(32).collect())
}

/// The client's `x-request-id`, when it is a sane one (printable, at most 128 bytes).
fn client_request_id(req: &RequestHeader) -> Option<String> {
    static NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);
    let id = req.headers.get(&NAME)?.to_str().ok()?.trim();
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| id.to_owned())
}

impl Ctx {
    /// The id the client sees in `x-request-id`: its own when it sent one, else ours.
    fn reply_id(&self) -> &str {
        self.client_request_id
            .as_deref()
            .unwrap_or(&self.request_id)
    }
}

fn upstream_error(e: &Error, provider: &'static str) -> GatewayError {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => GatewayError::UpstreamTimeout { provider },
        _ => GatewayError::UpstreamUnreachable { provider },
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    /// Boxed: pingora keeps the context inline in each connection's future, where it is
    /// copied into more than one slot (1.4 KB each); a box keeps one copy, on the heap.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx {
            request_id: String::new(),
            client_request_id: None,
            started: Instant::now(),
            occurred_at: Utc::now(),
            request_meter: RequestMeter::default(),
            response_meter: ResponseMeter::default(),
            body_preread: false,
            body_metered: 0,
            body_sent: 0,
            reservation: None,
            limits: OrgLimits::default(),
            model_label: None,
            route: None,
            identity: None,
            refused: None,
            cache_gated: false,
            body_refused: None,
            upstream_started: None,
            upstream_header_ms: None,
            upstream_done: None,
            access: Access::Free,
            claims: None,
            method_delete: false,
            upload: None,
            upload_final: false,
            status: 0,
            journaled: None,
            _in_flight: InFlight::new(&self.in_flight),
        })
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Box<Ctx>) -> Result<()> {
        crate::clients::Deadlined::head_read(session);
        // pingora would keep an idle kept-alive connection open for ever (`Some(0)`); `None`
        // (no reuse) is its own decision and stays.
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(self.clients.idle_timeout.as_secs().max(1)));
        }
        // Requests sent back to back on one connection are answered in order, not dropped.
        session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        ctx.request_id = crate::ledger::new_request_id(ctx.occurred_at);
        ctx.client_request_id = client_request_id(session.req_header());
        let admitted = match head_too_large(session.req_header(), &self.clients) {
            Some(e) => Err(e),
            None => self.admit_all(session, ctx).await,
        };
        let e = match admitted {
            Ok(()) if ctx.access == Access::List => match self.serve_listing(session, ctx).await {
                Ok(()) => return Ok(true),
                Err(e) => e,
            },
            Ok(()) => return Ok(false),
            Err(e) => e,
        };
        let headers = e.headers(self.counters.now());
        self.refuse(session, ctx, e, &headers).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        let provider = ctx.route.as_ref().map_or(Provider::Gemini, |r| r.provider);
        ctx.upstream_started.get_or_insert_with(Instant::now);
        self.upstream(provider).peer().ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                "upstream address not resolved yet",
            )
        })
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        // A body read before forwarding was metered then; pingora replays it from its buffer.
        // So does a retry (error_while_proxy): only bytes past what the meter saw are new.
        if let Some(b) = body.as_ref().filter(|_| !ctx.body_preread) {
            let end = ctx.body_sent + b.len();
            if end as u64 > self.clients.max_body_bytes {
                // A chunked body past the bound: this chunk is not sent (as below).
                ctx.body_refused = Some(GatewayError::BodyTooLarge {
                    max: self.clients.max_body_bytes,
                });
                return Error::e_explain(ErrorType::InternalError, "request body too large");
            }
            if end > ctx.body_metered {
                ctx.request_meter
                    .feed(&b[ctx.body_metered - ctx.body_sent..]);
                ctx.body_metered = end;
            }
            ctx.body_sent = end;
            if ctx.cache_gated && ctx.request_meter.names_cached_content {
                // This chunk is not sent: the upstream holds an incomplete request, which it
                // never acts on, and the connection is dropped.
                ctx.body_refused = Some(self.cached_content_refusal());
                return Error::e_explain(
                    ErrorType::InternalError,
                    "request body names a cached content; context_caching is off for the org",
                );
            }
            let meter = &ctx.request_meter;
            if !meter.references.is_empty() || meter.unreadable_reference {
                if let Err(e) = self.check_references(ctx) {
                    // As above: the chunk that completes the reference is not sent.
                    ctx.body_refused = Some(e);
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "request body references a resource the org does not own",
                    );
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<Duration>> {
        if let Some(b) = body {
            ctx.response_meter.feed(b);
            if let Some(c) = ctx.claims.as_mut() {
                if c.len() + b.len() <= MAX_HELD {
                    c.extend_from_slice(b);
                } else {
                    // Too large to read: nothing claimed (the org is refused its own later,
                    // never given another's).
                    tracing::debug!(request_id = %ctx.request_id, "response too large to read resource names from");
                    ctx.claims = None;
                }
            }
        }
        if end {
            ctx.upstream_done.get_or_insert_with(Instant::now);
            self.finish_owned(ctx);
            // Before the client has the whole answer: its next chunk may come at once, on
            // another connection.
            self.end_upload_chunk(ctx, ctx.status);
            // The event is journaled before the client has the last byte: a process killed
            // once the answer is out cannot lose it. (One that needs the exact tokenizer is
            // made in `logging`, off the proxy's workers.)
            if let Some(settled) = self.settle_now(ctx, ctx.status) {
                self.note_unpriced(ctx, &settled);
                let event = self.event_of(ctx, ctx.status, settled);
                ctx.journaled = Some((self.ledger.journal(&event), event));
            }
        }
        Ok(None)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        ctx.body_sent = 0; // a new attempt sends the body from its start
                           // One request id: the client's when it sent a valid one, else ours (never an invalid
                           // one the client sent, which it would not see again).
        req.insert_header(REQUEST_ID, ctx.reply_id())?;
        if ctx.body_preread {
            // The client already had its 100 Continue; the body is in hand.
            req.remove_header(&http::header::EXPECT);
        }
        let provider = ctx.route.as_ref().map_or(Provider::Gemini, |r| r.provider);
        self.upstream(provider).rewrite_request(req)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_header_ms = Some(t.elapsed().as_millis() as u64);
            if let Some(r) = &ctx.route {
                self.upstream(r.provider).last_ok.store(
                    chrono::Utc::now().timestamp(),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        if let Some(r) = &ctx.reservation {
            if let Some(w) = Alerts::warning(&ctx.limits, r.usage()) {
                resp.insert_header("x-tollgate-limit-warning", w)?;
            }
        }
        resp.insert_header(REQUEST_ID, ctx.reply_id())?;
        ctx.status = resp.status.as_u16();
        close_if_stopping(session);
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
                // No body filter follows: the session moves on before the client has the
                // answer (its next chunk may come at once, on another connection).
                self.end_upload_chunk(ctx, ctx.status);
            }
        }
        if resp.status.is_success() {
            if let (Access::One(own), true, Some(id)) =
                (&ctx.access, ctx.method_delete, &ctx.identity)
            {
                // Google deleted it: the name is free again.
                self.owners.release(own, id.org_id);
            }
            match ctx.access {
                // JSON only: a file's download (`:download?alt=media`) is its bytes.
                Access::One(_) | Access::Create | Access::Poll
                    if resp
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/json")) =>
                {
                    ctx.claims = Some(Vec::new())
                }
                // Listings are answered by `serve_listing`.
                _ => {}
            }
        }
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
        if let Some(ours) = upstream::rewrite_upload_url(&google_url, &base) {
            if let (Some(id), Some(identity)) = (
                url::Url::parse(&ours)
                    .ok()
                    .and_then(|u| u.query().and_then(upstream::upload_id).map(str::to_owned)),
                &ctx.identity,
            ) {
                self.uploads.start(id, identity.clone());
            }
            resp.insert_header(UPLOAD_URL, ours)?;
        }
        Ok(())
    }

    /// A request that fails on a reused upstream connection before any response arrived is
    /// retried on another connection: the upstream closed that idle connection just as we sent
    /// (a write that hits its reset, or end of stream before a status line), so it never saw the
    /// request and nothing is billed twice. The body is replayed from pingora's retry buffer, so
    /// only bodies up to its 64 KiB qualify. Other errors keep pingora's rule (idempotent
    /// methods only).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.body_refused.is_some() {
            e.set_retry(false);
            return e;
        }
        let truncated = session.as_ref().retry_buffer_truncated();
        if session.req_header().method.is_idempotent() && !truncated {
            e.retry.decide_reuse(client_reused); // pingora's own rule
        } else {
            let idle_race = client_reused
                && ctx.upstream_header_ms.is_none()
                && matches!(
                    e.etype(),
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
                );
            e.set_retry(idle_race && !truncated);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        // pingora closes the client connection after a failed proxy: the answer says so.
        session.set_keepalive(None);
        if let Some(refusal) = ctx.body_refused.take() {
            let code = refusal.status();
            if session.response_written().is_none() {
                if let Err(write_err) = self.refuse(session, ctx, refusal, &[]).await {
                    tracing::debug!(error = %write_err, "cannot send the refusal");
                }
            } else {
                ctx.refused = Some(refusal);
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let provider = ctx.route.as_ref().map_or("gemini", |r| r.provider.as_str());
        let error = match e.esource() {
            ErrorSource::Downstream => {
                let gone = matches!(
                    e.etype(),
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
                );
                if gone {
                    // The client went away: nobody to answer.
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                // The client sent a body it framed wrongly (a bad chunk size): it is told so.
                let refusal = GatewayError::BadBody;
                if session.response_written().is_none() {
                    if let Err(write_err) = self.refuse(session, ctx, refusal, &[]).await {
                        tracing::debug!(error = %write_err, "cannot send the refusal");
                    }
                } else {
                    ctx.refused = Some(refusal);
                }
                return FailToProxy {
                    error_code: 400,
                    can_reuse_downstream: false,
                };
            }
            ErrorSource::Upstream => {
                if let Some(r) = &ctx.route {
                    self.upstream(r.provider).last_err.store(
                        chrono::Utc::now().timestamp(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                upstream_error(e, provider)
            }
            _ => GatewayError::Internal,
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[provider, error.kind()])
            .inc();
        let code = error.status();
        if session.response_written().is_some() {
            // Cut mid-response: the client already has the status; the event meters what passed.
            tracing::warn!(request_id = %ctx.request_id, error.kind = error.kind(), "upstream response cut short");
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        if let Err(write_err) = self.refuse(session, ctx, error, &[]).await {
            tracing::debug!(error = %write_err, "cannot send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        crate::clients::Deadlined::awaiting_head(session);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let (journaled, event) = match ctx.journaled.take() {
            Some((j, mut event)) => {
                event.total_latency_ms = ctx.started.elapsed().as_millis() as i64;
                (Some(j), event)
            }
            None => (None, self.usage_event(ctx, status).await),
        };
        self.end_upload_chunk(ctx, status);
        self.record_metrics(ctx, status, &event);
        let id = ctx.identity.as_ref();
        self.access_log.record(&AccessLine {
            request_id: &event.request_id,
            client_request_id: ctx.client_request_id.as_deref().unwrap_or(""),
            org: id.map_or("", |i| &*i.org_name),
            key_prefix: id.map_or("", |i| &*i.key_prefix),
            provider: &event.provider,
            model: &event.model,
            operation: &event.operation,
            status,
            refused: ctx.refused.as_ref().map_or("", |e| e.kind()),
            upstream_ms: ctx.upstream_header_ms,
            total_ms: event.total_latency_ms,
            input_tokens: event.input_tokens,
            output_tokens: event.output_tokens,
            thinking_tokens: event.thinking_tokens,
            cost_micros: event.cost_micros,
        });
        if let Some(r) = ctx.reservation.take() {
            let actual = Amounts::new(
                i64::from(event.metered),
                event.images + event.videos,
                event.total_tokens,
                event.cost_micros,
            );
            let usage = self.counters.settle(r, actual);
            if let Some(id) = &ctx.identity {
                self.alerts
                    .check(id.org_id, &id.org_name, &ctx.limits, usage, &self.counters);
            }
        }
        match journaled {
            Some(j) => self.ledger.queue(j, event),
            None => self.ledger.record(event),
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Box<Ctx>, error: &Error) -> bool {
        // A client that hangs up is not an error of ours (the access line still records it).
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
            )
    }

    fn request_summary(&self, session: &Session, _ctx: &Box<Ctx>) -> String {
        // pingora's default prints the whole URI, `?key=` included; the path is enough.
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }
}

#[cfg(test)]
mod tests {
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
