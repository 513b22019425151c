//! Listings (files, cached contents, batches, operations) answered by the gateway with the
//! org's own entries only (pages fetched and filtered by `crate::listing`).

use std::time::Instant;

use bytes::Bytes;
use pingora::proxy::Session;

use super::forward::respond;
use super::{Ctx, Proxy};
use crate::error::GatewayError;
use crate::listing::Listed;

impl Proxy {
    /// Answers a listing with the org's own entries (see `listing`).
    pub(super) async fn serve_listing(
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
}
