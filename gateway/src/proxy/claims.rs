//! Ownership as answers pass: what Google creates for an org (files, cached contents, batches,
//! operations and what they produce) becomes that org's, and a deleted resource's name is
//! released, so one Google project can be shared without one org reaching another's resources.

use pingora::http::ResponseHeader;

use super::{Ctx, Proxy};
use crate::resources::{self, Access};

/// Largest creation or poll response read for the names it gives the org (Google's are a few
/// KB; a Vertex video inline in a poll, or a batch's inline output, may be far larger and
/// names nothing to claim beyond what its first bytes hold).
const MAX_HELD: usize = 1024 * 1024;

impl Proxy {
    /// At the end of a successful response: the resources it named become the org's.
    pub(super) fn finish_owned(&self, ctx: &mut Ctx) {
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

    /// A successful answer about owned resources: a deleted one's name is free again, and a JSON
    /// answer that creates or reads them is held to read the names it gives the org.
    pub(super) fn claims_answered(&self, resp: &ResponseHeader, ctx: &mut Ctx) {
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
    }

    /// A chunk of a held answer (up to [`MAX_HELD`]; past that nothing is claimed).
    pub(super) fn hold_claims(&self, ctx: &mut Ctx, b: &[u8]) {
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
}
