//! Admit: whether the identified org may make this request (its flags, the resources it names
//! are its own, its usage limits) before anything is forwarded. Counters and flags are in
//! memory; nothing here waits on the database.

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use store::Feature;

use super::identify::head_too_large;
use super::{Ctx, Proxy};
use crate::admission;
use crate::error::GatewayError;
use crate::limits::OrgLimits;
use crate::resources::{self, Access};
use crate::route::Operation;
use crate::snapshot::Snapshot;

impl Proxy {
    /// Whether the identified org may make this request: its feature flags, the upload session
    /// and the resource it names are its own, and the provider has a credential.
    pub(super) fn admit(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        snap: &Snapshot,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        let path = req.uri.path();
        let (Some(route), Some(org_id)) =
            (ctx.route.as_ref(), ctx.identity.as_ref().map(|i| i.org_id))
        else {
            return Err(GatewayError::Internal);
        };
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

    /// Every check before forwarding, in order: the head's size, route and identity, flags and
    /// ownership, a body naming a cached content, the resources a body names, usage limits.
    pub(super) async fn admit_all(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<(), GatewayError> {
        if let Some(e) = head_too_large(session.req_header(), &self.clients) {
            return Err(e);
        }
        let snap = self.identify(session, ctx)?;
        self.admit(session, ctx, &snap)?;
        drop(snap);
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
    pub(super) fn check_references(&self, ctx: &mut Ctx) -> Result<(), GatewayError> {
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
    pub(super) async fn gate_cached_content(
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

    pub(super) fn cached_content_refusal(&self) -> GatewayError {
        let feature = Feature::ContextCaching.as_str();
        self.metrics
            .feature_refusals
            .with_label_values(&[feature])
            .inc();
        GatewayError::FeatureDisabled { feature }
    }

    /// Checks the org's usage limits and reserves the request's expected usage. Metered
    /// requests only (counting tokens, polling, listing are never refused by a limit).
    pub(super) async fn enforce_limits(
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
}

/// The request's `Content-Encoding` unless it is absent or `identity` (shortened for messages).
pub(super) fn content_encoding(req: &RequestHeader) -> Option<String> {
    let v = req.headers.get(http::header::CONTENT_ENCODING)?;
    let v = String::from_utf8_lossy(v.as_bytes()).trim().to_owned();
    (!v.is_empty() && !v.eq_ignore_ascii_case("identity")).then(|| v.chars().take(32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn with_encoding(v: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/v1beta/files", None).unwrap();
        if let Some(v) = v {
            req.insert_header("content-encoding", v).unwrap();
        }
        req
    }

    #[test]
    fn only_a_real_content_encoding_counts() {
        assert_eq!(content_encoding(&with_encoding(None)), None);
        assert_eq!(content_encoding(&with_encoding(Some("identity"))), None);
        assert_eq!(content_encoding(&with_encoding(Some(" IDENTITY "))), None);
        assert_eq!(
            content_encoding(&with_encoding(Some("gzip"))).as_deref(),
            Some("gzip")
        );
        let long = "x".repeat(100);
        assert_eq!(
            content_encoding(&with_encoding(Some(&long))).map(|v| v.len()),
            Some(32)
        );
    }
}
