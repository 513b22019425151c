//! Record: the event journaled before the answer's last byte (or before a gateway-made answer
//! goes out), then, when the request is over, its usage settled against the limit counters,
//! metrics and the access line written, and the event queued for the ledger.

use std::time::Instant;

use pingora::prelude::*;
use pingora::proxy::Session;

use super::forward::respond;
use super::{Ctx, Proxy};
use crate::access_log::AccessLine;
use crate::error::GatewayError;
use crate::limits::Amounts;
use crate::metrics::status_class;

impl Proxy {
    /// Makes and journals the event of an answer the gateway writes itself, before it goes
    /// out (a crash once it is out cannot lose it; `logging` queues it). Returns the reply id
    /// (the event takes the request's own).
    pub(super) fn journal_answer(&self, ctx: &mut Ctx, status: u16) -> String {
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
    pub(super) async fn refuse(
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

    /// Request, latency and usage metrics of one finished request.
    pub(super) fn record_metrics(&self, ctx: &Ctx, status: u16, e: &store::UsageEvent) {
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

    /// The response's last bytes are passing: what it named becomes the org's, an upload chunk
    /// moves its session on, and the event is journaled, all before the client has the whole
    /// answer.
    pub(super) fn answer_ended(&self, ctx: &mut Ctx) {
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

    /// The request is over (served, refused, failed or cut): its event is made if it was not
    /// yet, its reservation settled against what it used, its metrics and access line written,
    /// and the event queued for the ledger.
    pub(super) async fn finish(&self, session: &mut Session, ctx: &mut Ctx) {
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
}
