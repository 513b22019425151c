//! Meter: the one usage event of a request, settled from what its request and response meters
//! saw (tokens, images, video seconds) and priced; the exact tokenizer, when a count needs it,
//! runs off the proxy's workers.

use super::{Ctx, Proxy};
use crate::metering;
use crate::route::{Operation, Route};

/// Distinct unpriced models warned about (later ones are still counted and flagged, not logged).
const MAX_UNPRICED_WARNINGS: usize = 1_000;

impl Proxy {
    /// The one usage event of a request: refused, failed or served.
    pub(super) async fn usage_event(&self, ctx: &mut Ctx, status: u16) -> store::UsageEvent {
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

    /// The event's settlement when it needs no exact token count (else `None`).
    pub(super) fn settle_now(&self, ctx: &Ctx, status: u16) -> Option<metering::Settled> {
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

    pub(super) fn note_unpriced(&self, ctx: &Ctx, settled: &metering::Settled) {
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
    pub(super) fn event_of(
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
