//! Usage reads: totals and breakdowns for a window of UTC days (from the daily rollups), the
//! most recent events (paged by a cursor), limit alerts, the cross-org comparison, and the
//! audit log. "Requests" everywhere means metered requests, what `daily_requests` counts:
//! refusals, token counts, polls, listings and file calls are not requests here.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use store::{AuditEntry, EventCursor, RollupGroup, Store, UsageEvent, UsageTotals};
use utoipa::ToSchema;

use super::authz::{check, Action};
use super::parse::{self, Window};
use super::{visible_org, Actor, OpsError};

/// Sums over a window or a group.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Totals {
    /// The group (a provider, model, tool, user, day or org); empty for the grand total.
    pub key: String,
    /// Metered requests.
    pub requests: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Output tokens (visible), without thinking.
    pub output_tokens: i64,
    /// Thinking tokens (billed as output).
    pub thinking_tokens: i64,
    /// Cached prompt tokens (a part of input).
    pub cached_tokens: i64,
    /// All tokens.
    pub total_tokens: i64,
    /// Images generated.
    pub images: i64,
    /// Videos generated.
    pub videos: i64,
    /// Seconds of video generated.
    pub video_seconds: i64,
    /// Cost in micro-dollars (exact).
    pub cost_micros: i64,
    /// Cost in dollars.
    pub cost_usd: f64,
    /// This group's share of the window's cost, in percent.
    pub cost_share: f64,
}

fn totals(t: UsageTotals, all_cost: i64) -> Totals {
    let share = if all_cost > 0 {
        (t.cost_micros as f64 * 10_000.0 / all_cost as f64).round() / 100.0
    } else {
        0.0
    };
    Totals {
        key: t.group_key,
        requests: t.requests,
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        thinking_tokens: t.thinking_tokens,
        cached_tokens: t.cached_tokens,
        total_tokens: t.total_tokens,
        images: t.images,
        videos: t.videos,
        video_seconds: t.video_seconds,
        cost_usd: parse::micros_to_usd(t.cost_micros),
        cost_micros: t.cost_micros,
        cost_share: share,
    }
}

/// An org's usage over a window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageReport {
    /// The organization's name.
    pub org: String,
    /// The window (UTC days, inclusive).
    pub window: Window,
    /// Everything in the window.
    pub totals: Totals,
    /// By provider, costliest first.
    pub by_provider: Vec<Totals>,
    /// By model, costliest first.
    pub by_model: Vec<Totals>,
    /// By tool (`x-tollgate-tool`; empty key: none named), costliest first.
    pub by_tool: Vec<Totals>,
    /// By user (`x-tollgate-user` or the key's user; empty key: none), costliest first.
    pub by_user: Vec<Totals>,
    /// By UTC day, oldest first; days without usage are absent.
    pub by_day: Vec<Totals>,
}

async fn grouped(
    store: &Store,
    org: Option<i64>,
    w: Window,
    g: RollupGroup,
    all_cost: i64,
) -> Result<Vec<Totals>, OpsError> {
    Ok(store
        .rollup_usage(org, w.from, w.to, g)
        .await?
        .into_iter()
        .map(|t| totals(t, all_cost))
        .collect())
}

/// An org's usage over a window of UTC days, from the rollups.
pub async fn report(
    store: &Store,
    actor: &Actor,
    org: &str,
    w: Window,
) -> Result<UsageReport, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    let b = store.usage_breakdowns(org.id, w.from, w.to).await?;
    let all = b.total.cost_micros;
    let list = |v: Vec<UsageTotals>| v.into_iter().map(|t| totals(t, all)).collect();
    Ok(UsageReport {
        org: org.name.clone(),
        window: w,
        totals: totals(b.total, all),
        by_provider: list(b.by_provider),
        by_model: list(b.by_model),
        by_tool: list(b.by_tool),
        by_user: list(b.by_user),
        by_day: list(b.by_day),
    })
}

/// Every org's usage over a window, costliest first (superuser).
pub async fn cross_org(store: &Store, actor: &Actor, w: Window) -> Result<Vec<Totals>, OpsError> {
    check(actor, None, Action::Platform)?;
    let all = store
        .rollup_usage(None, w.from, w.to, RollupGroup::Nothing)
        .await?
        .pop()
        .map_or(0, |t| t.cost_micros);
    grouped(store, None, w, RollupGroup::Org, all).await
}

/// One stored event as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// The gateway's request id.
    pub request_id: String,
    /// The `x-request-id` the client sent, if any.
    pub client_request_id: Option<String>,
    /// When the request arrived.
    pub occurred_at: DateTime<Utc>,
    /// The key used.
    pub key_id: Option<i64>,
    /// The user (`x-tollgate-user` or the key's user).
    pub user: Option<String>,
    /// The tool (`x-tollgate-tool`).
    pub tool: Option<String>,
    /// gemini or vertex.
    pub provider: String,
    /// The model as requested.
    pub model: String,
    /// The operation.
    pub operation: String,
    /// The HTTP status returned.
    pub status: i32,
    /// Whether it counts as a request toward usage and limits.
    pub metered: bool,
    /// Whether the response was streamed.
    pub streamed: bool,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Thinking tokens.
    pub thinking_tokens: i64,
    /// All tokens.
    pub total_tokens: i64,
    /// Images generated.
    pub images: i64,
    /// Video seconds generated.
    pub video_seconds: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
    /// Counts were estimated (no usage block arrived).
    pub estimated: bool,
    /// False when the model had no price and a fallback was used.
    pub priced: bool,
    /// Milliseconds from request to the end of the response.
    pub latency_ms: i64,
}

impl From<UsageEvent> for EventView {
    fn from(e: UsageEvent) -> Self {
        EventView {
            request_id: e.request_id,
            client_request_id: e.client_request_id,
            occurred_at: e.occurred_at,
            key_id: e.key_id,
            user: e.user_ref,
            tool: e.tool,
            provider: e.provider,
            model: e.model,
            operation: e.operation,
            status: e.status,
            metered: e.metered,
            streamed: e.streamed,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            thinking_tokens: e.thinking_tokens,
            total_tokens: e.total_tokens,
            images: e.images,
            video_seconds: e.video_seconds,
            cost_micros: e.cost_micros,
            estimated: e.estimated,
            priced: e.priced,
            latency_ms: e.total_latency_ms,
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventsPage {
    /// The events.
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Events are kept this many days (older ones are deleted; totals stay in the rollups);
    /// absent: kept for ever.
    pub kept_days: Option<u64>,
}

/// Default and largest page of events.
pub const EVENTS_PAGE: i64 = 100;

/// The cursor keeps the time to the nanosecond: SQLite compares the stored text, which has
/// every digit the gateway recorded.
fn cursor_text(c: &EventCursor) -> String {
    let nanos = c
        .occurred_at
        .timestamp_nanos_opt()
        .unwrap_or(c.occurred_at.timestamp_micros().saturating_mul(1000));
    format!("{nanos}_{}", c.id)
}

/// Parses a cursor handed out by [`events`].
pub fn parse_cursor(raw: &str) -> Result<EventCursor, OpsError> {
    let bad = || OpsError::invalid("cursor", "not a cursor this API handed out");
    let (t, id) = raw.split_once('_').ok_or_else(bad)?;
    let nanos: i64 = t.parse().map_err(|_| bad())?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    let occurred_at = Utc.timestamp_nanos(nanos);
    Ok(EventCursor { occurred_at, id })
}

/// The org's most recent events (every event, metered or not), newest first.
pub async fn events(
    store: &Store,
    actor: &Actor,
    org: &str,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<EventsPage, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    let limit = limit.unwrap_or(EVENTS_PAGE);
    if !(1..=EVENTS_PAGE).contains(&limit) {
        return Err(OpsError::invalid(
            "limit",
            format!("must be between 1 and {EVENTS_PAGE}, got {limit}"),
        ));
    }
    let cursor = cursor.map(parse_cursor).transpose()?;
    let page = store.event_page(org.id, cursor.as_ref(), limit).await?;
    Ok(EventsPage {
        kept_days: None,
        next_cursor: page.next.as_ref().map(cursor_text),
        events: page.events.into_iter().map(EventView::from).collect(),
    })
}

/// A limit alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    /// Which limit.
    pub limit_type: String,
    /// The period (`2026-11` or `2026-11-28`).
    pub period: String,
    /// The percent crossed.
    pub threshold_pct: i32,
    /// The limit's value then (micro-dollars for cost).
    pub limit_value: i64,
    /// The usage then.
    pub usage_value: i64,
    /// When it fired.
    pub created_at: DateTime<Utc>,
}

/// The org's limit alerts, newest first.
pub async fn alerts(store: &Store, actor: &Actor, org: &str) -> Result<Vec<AlertView>, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    Ok(store
        .list_alerts(org.id)
        .await?
        .into_iter()
        .map(|a| AlertView {
            limit_type: a.limit_type.to_string(),
            period: a.period,
            threshold_pct: a.threshold_pct,
            limit_value: a.limit_value,
            usage_value: a.usage_value,
            created_at: a.created_at,
        })
        .collect())
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    /// Stable id; pass the last one as `before` for the next page.
    pub id: i64,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who (an email, or `cli`).
    pub actor: String,
    /// What (`key.create`, `member.role`, …).
    pub action: String,
    /// The organization concerned.
    pub org_id: Option<i64>,
    /// The object changed.
    pub target: String,
    /// Detail (JSON text).
    pub detail: String,
}

impl From<AuditEntry> for AuditView {
    fn from(a: AuditEntry) -> Self {
        AuditView {
            id: a.id,
            occurred_at: a.occurred_at,
            actor: a.actor,
            action: a.action,
            org_id: a.org_id,
            target: a.target,
            detail: a.detail,
        }
    }
}

/// Default and largest page of audit entries.
pub const AUDIT_PAGE: i64 = 200;

/// A filter for the audit log: which org (`None`: every org, superuser only), which days, and
/// where the page starts.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this org (id or name).
    pub org: Option<String>,
    /// First UTC day included.
    pub from: Option<NaiveDate>,
    /// Last UTC day included.
    pub to: Option<NaiveDate>,
    /// Entries older than this id.
    pub before: Option<i64>,
    /// Page size (1–200).
    pub limit: Option<i64>,
}

/// The audit log, newest first: a superuser's of everything, an owner's or admin's of their org.
pub async fn audit(
    store: &Store,
    actor: &Actor,
    f: &AuditFilter,
) -> Result<Vec<AuditView>, OpsError> {
    let org_id = match &f.org {
        Some(o) => {
            let org = visible_org(store, actor, o).await?;
            check(actor, Some(org.id), Action::ReadAudit)?;
            Some(org.id)
        }
        None => {
            check(actor, None, Action::Platform)?;
            None
        }
    };
    let limit = f.limit.unwrap_or(50);
    if !(1..=AUDIT_PAGE).contains(&limit) {
        return Err(OpsError::invalid(
            "limit",
            format!("must be between 1 and {AUDIT_PAGE}, got {limit}"),
        ));
    }
    if let (Some(a), Some(b)) = (f.from, f.to) {
        if b < a {
            return Err(OpsError::invalid(
                "from",
                format!("from ({a}) is after to ({b})"),
            ));
        }
    }
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let q = store::AuditQuery {
        org_id,
        since: f.from.map(midnight),
        until: f.to.and_then(|d| d.succ_opt()).map(midnight),
        before_id: f.before,
        limit,
    };
    Ok(store
        .audit_page(&q)
        .await?
        .into_iter()
        .map(AuditView::from)
        .collect())
}

/// One gateway's heartbeat.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GatewayStatus {
    /// Unique per running process.
    pub instance_id: String,
    /// Its version.
    pub version: String,
    /// Enforcing in fail-open mode.
    pub degraded: bool,
    /// Silent for more than 30 s.
    pub stale: bool,
    /// When it last synced counters.
    pub last_sync: Option<DateTime<Utc>>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
}

/// A model billed with a fallback price.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnpricedModel {
    /// The model.
    pub model: String,
    /// Events priced with the fallback in the last 30 days.
    pub events: i64,
}

/// The fleet's state, for the console's banner.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    /// A gateway is degraded (fail-open) or silent.
    pub degraded: bool,
    /// Gateways that reported in the last 10 minutes.
    pub gateways: Vec<GatewayStatus>,
    /// Models without a price seen in the last 30 days (at most 50, most events first): every
    /// org's for a superuser, the actor's orgs' for anyone else.
    pub unpriced_models: Vec<UnpricedModel>,
}

/// Most unpriced models listed in the status.
const MAX_UNPRICED_LISTED: i64 = 50;

/// The fleet's state for any logged-in user: gateways that reported in the last 10 minutes (one
/// degraded, i.e. fail-open, or silent for 30 s sets `degraded`) and models billed with a
/// fallback price in the last 30 days.
pub async fn fleet_status(store: &Store, actor: &Actor) -> Result<Status, OpsError> {
    let now = Utc::now();
    let gateways: Vec<GatewayStatus> = store
        .live_instances(now - chrono::Duration::minutes(10))
        .await?
        .into_iter()
        .map(|g| GatewayStatus {
            stale: g.updated_at < now - chrono::Duration::seconds(30),
            instance_id: g.instance_id,
            version: g.version,
            degraded: g.degraded,
            last_sync: g.last_sync,
            updated_at: g.updated_at,
        })
        .collect();
    let since = now - chrono::Duration::days(30);
    // Model names are what tenants sent: another org's are not shown.
    let mut unpriced: Vec<(String, i64)> = if actor.superuser {
        store
            .unpriced_models(since, None, MAX_UNPRICED_LISTED)
            .await?
    } else {
        let mut by_model = std::collections::BTreeMap::<String, i64>::new();
        for (org, _) in actor.memberships() {
            for (model, n) in store
                .unpriced_models(since, Some(org), MAX_UNPRICED_LISTED)
                .await?
            {
                *by_model.entry(model).or_default() += n;
            }
        }
        by_model.into_iter().collect()
    };
    unpriced.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    unpriced.truncate(MAX_UNPRICED_LISTED as usize);
    let unpriced_models = unpriced
        .into_iter()
        .map(|(model, events)| UnpricedModel { model, events })
        .collect();
    Ok(Status {
        degraded: gateways.iter().any(|g| g.degraded || g.stale),
        gateways,
        unpriced_models,
    })
}
