//! Forward: the request on its way to Google and back: the upstream peer, the rewritten head,
//! the body checked chunk by chunk as it streams, retries of a request the upstream never saw,
//! and upstream failures turned into answers in Google's error format.

use std::time::Instant;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};

use super::{Ctx, Proxy, REQUEST_ID};
use crate::error::GatewayError;
use crate::route::Provider;

impl Proxy {
    /// A new client connection's bounds: the head's deadline, an idle timeout for kept-alive
    /// connections, and pipelined requests answered in order.
    pub(super) fn prepare_client(&self, session: &mut Session) {
        crate::clients::Deadlined::head_read(session);
        // pingora would keep an idle kept-alive connection open for ever (`Some(0)`); `None`
        // (no reuse) is its own decision and stays.
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(self.clients.idle_timeout.as_secs().max(1)));
        }
        // Requests sent back to back on one connection are answered in order, not dropped.
        session.set_pipelining_enabled(true);
    }

    /// The upstream of the request's provider.
    pub(super) fn peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let provider = ctx.route.as_ref().map_or(Provider::Gemini, |r| r.provider);
        ctx.upstream_started.get_or_insert_with(Instant::now);
        self.upstream(provider).peer().ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                "upstream address not resolved yet",
            )
        })
    }

    /// A chunk of the request body on its way: metered, bounded, and checked for the
    /// resources it names.
    pub(super) fn forward_body(&self, body: &mut Option<Bytes>, ctx: &mut Ctx) -> Result<()> {
        // A body read before forwarding was metered then; pingora replays it from its buffer.
        // So does a retry (`retry_decision`): only bytes past what the meter saw are new.
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

    /// The head sent upstream: one request id, no `Expect` for a body in hand, the provider's
    /// credential instead of the gateway key.
    pub(super) fn rewrite_request(&self, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        // A new attempt sends the body from its start.
        ctx.body_sent = 0;
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

    /// The upstream answered: when, and that it is up.
    pub(super) fn upstream_answered(&self, ctx: &mut Ctx) {
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_header_ms = Some(t.elapsed().as_millis() as u64);
            if let Some(r) = &ctx.route {
                self.upstream(r.provider).last_ok.store(
                    chrono::Utc::now().timestamp(),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    }

    /// A request that fails on a reused upstream connection before any response arrived is
    /// retried on another connection: the upstream closed that idle connection just as we sent
    /// (a write that hits its reset, or end of stream before a status line), so it never saw the
    /// request and nothing is billed twice. The body is replayed from pingora's retry buffer, so
    /// only bodies up to its 64 KiB qualify. Other errors keep pingora's rule (idempotent
    /// methods only).
    pub(super) fn retry_decision(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
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

    /// Refuses the request unless the client already has part of an answer (then it is only
    /// recorded as refused: its event says so).
    async fn refuse_if_unanswered(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        refusal: GatewayError,
    ) {
        if session.response_written().is_none() {
            if let Err(write_err) = self.refuse(session, ctx, refusal, &[]).await {
                tracing::debug!(error = %write_err, "cannot send the refusal");
            }
        } else {
            ctx.refused = Some(refusal);
        }
    }

    /// A request that could not be proxied: the client is told why in Google's error format
    /// (unless it went away, or already has part of the answer).
    pub(super) async fn fail(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        // pingora closes the client connection after a failed proxy: the answer says so.
        session.set_keepalive(None);
        if let Some(refusal) = ctx.body_refused.take() {
            let code = refusal.status();
            self.refuse_if_unanswered(session, ctx, refusal).await;
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
                self.refuse_if_unanswered(session, ctx, GatewayError::BadBody)
                    .await;
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
}

/// While the gateway stops, each answer says `Connection: close` and the connection ends
/// after it, so a kept-alive client does not send its next request into a closing socket.
pub(super) fn close_if_stopping(session: &mut Session) {
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
}

/// Writes a complete gateway-made response and keeps the client connection reusable (unless
/// the gateway is stopping).
pub(super) async fn respond(
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

pub(super) fn upstream_error(e: &Error, provider: &'static str) -> GatewayError {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => GatewayError::UpstreamTimeout { provider },
        _ => GatewayError::UpstreamUnreachable { provider },
    }
}
