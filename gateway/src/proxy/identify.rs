//! Identify: what the request is (a known route, a head and a declared body within the
//! gateway's bounds) and which organization sends it (its key, or the upload session it
//! continues).

use std::sync::Arc;

use arc_swap::Guard;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::{Ctx, Proxy};
use crate::admission;
use crate::error::GatewayError;
use crate::identity;
use crate::resources;
use crate::route;
use crate::snapshot::Snapshot;

impl Proxy {
    /// What the request is (its route, within the gateway's bounds) and who sends it; the error
    /// says why it cannot be told.
    /// The snapshot it was identified with is returned: admission reads the same one.
    pub(super) fn identify(
        &self,
        session: &Session,
        ctx: &mut Ctx,
    ) -> Result<Guard<Arc<Snapshot>>, GatewayError> {
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
        ctx.identity = Some(identity);
        Ok(snap)
    }
}

/// The refusal of a request head larger than the gateway accepts (pingora's own bounds are
/// 1 MiB and 256 headers, which would all be forwarded).
pub(super) fn head_too_large(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ClientLimits;

    fn head(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(
            "POST",
            b"/v1beta/models/gemini-2.5-flash:generateContent",
            None,
        )
        .unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn a_head_within_the_bounds_passes() {
        let limits = ClientLimits::default();
        assert!(head_too_large(&head(&[("x-goog-api-key", "tg_x")]), &limits).is_none());
    }

    #[test]
    fn too_many_headers_or_bytes_are_refused_with_431() {
        let limits = ClientLimits {
            max_headers: 3,
            max_header_bytes: 200,
            ..ClientLimits::default()
        };
        let many: Vec<(String, &str)> = (0..4).map(|i| (format!("x-h{i}"), "v")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let e = head_too_large(&head(&many), &limits).expect("four headers of three");
        assert_eq!(e.status(), 431);
        let long = "v".repeat(200);
        let e = head_too_large(&head(&[("x-long", &long)]), &limits).expect("a 200-byte value");
        assert_eq!(e.status(), 431);
        assert!(head_too_large(&head(&[("x-short", "v")]), &limits).is_none());
    }
}
