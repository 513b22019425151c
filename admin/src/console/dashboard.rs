//! The usage dashboard of one org and its CSV exports: cards, limit bars, the daily chart, the
//! breakdowns, the cross-org comparison (superusers) and the most recent requests. Totals and
//! charts come from the rollups through `ops::usage`; only the recent requests read events.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use super::chart::{self, Day};
use super::{fmt, Nav, Page, Viewer};
use crate::ops::parse::{self, RangeName, Window};
use crate::ops::usage::{self, Totals};
use crate::ops::{self, OpsError};
use crate::AppState;

/// The window and paging in the query string.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DashQuery {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
}

impl DashQuery {
    /// The window asked for; a custom from/to wins over a range only when no range is named.
    fn window(&self) -> Result<(Window, String), OpsError> {
        let today = Utc::now().date_naive();
        let empty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let (from, to) = (empty(&self.from), empty(&self.to));
        let range = match self.range.as_deref().map(str::trim) {
            None | Some("") | Some("custom") => None,
            Some("this_month") => Some(RangeName::ThisMonth),
            Some("last_7_days") => Some(RangeName::Last7Days),
            Some("last_30_days") => Some(RangeName::Last30Days),
            Some(other) => {
                return Err(OpsError::invalid(
                    "range",
                    format!("unknown range {other:?}"),
                ))
            }
        };
        // The form sends the range with the dates it showed: a named range wins.
        let w = match range {
            Some(r) => parse::window(today, Some(r), None, None)?,
            None => parse::window(today, None, from.as_deref(), to.as_deref())?,
        };
        let name = match (range, &from, &to) {
            (Some(RangeName::ThisMonth), _, _) => "this_month",
            (Some(RangeName::Last7Days), _, _) => "last_7_days",
            (Some(RangeName::Last30Days), _, _) => "last_30_days",
            (None, None, None) => "this_month",
            _ => "custom",
        };
        Ok((w, name.to_owned()))
    }
}

/// The four cards.
pub struct Cards {
    cost: String,
    tokens: String,
    requests: String,
    input: String,
    output: String,
}

/// One limit's bar.
pub struct LimitBar {
    name: String,
    enabled: bool,
    value: String,
    usage: String,
    percent: String,
    width: String,
    state: &'static str,
    resets: String,
    resets_iso: String,
}

/// A breakdown table.
pub struct Table {
    id: &'static str,
    title: &'static str,
    rows: Vec<Row>,
}

/// One row of a breakdown.
pub struct Row {
    key: String,
    requests: String,
    tokens: String,
    cost: String,
    share: String,
}

/// One recent request.
pub struct EventRow {
    time: String,
    iso: String,
    user: String,
    tool: String,
    model: String,
    operation: String,
    status: i32,
    tokens: String,
    cost: String,
    latency: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    title: String,
    nav: Option<Nav>,
    org: String,
    range: String,
    ranges: Vec<(&'static str, &'static str)>,
    from: String,
    to: String,
    banners: Vec<String>,
    cards: Cards,
    limits: Vec<LimitBar>,
    chart: String,
    tables: Vec<Table>,
    cross: Option<Vec<Row>>,
    events: Vec<EventRow>,
    more: Option<String>,
    /// How long requests are kept (`ledger.retention_days`; `None`: for ever).
    kept_days: Option<u64>,
}

fn key_label(k: &str) -> String {
    if k.is_empty() {
        "(none)".into()
    } else {
        k.to_owned()
    }
}

fn rows(t: &[Totals]) -> Vec<Row> {
    t.iter()
        .map(|r| Row {
            key: key_label(&r.key),
            requests: fmt::thousands(r.requests),
            tokens: fmt::thousands(r.total_tokens),
            cost: fmt::dollars(r.cost_micros),
            share: fmt::percent(r.cost_share),
        })
        .collect()
}

pub(super) fn limit_name(t: &str) -> String {
    match t {
        "monthly_tokens" => "Tokens this month",
        "monthly_cost" => "Cost this month",
        "daily_ads" => "Images and videos today",
        "daily_requests" => "Requests today",
        other => other,
    }
    .to_owned()
}

/// `GET /orgs/{org}/dashboard`
pub async fn page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(org): Path<String>,
    Query(q): Query<DashQuery>,
) -> Response {
    match render(&state, &viewer, &org, &q).await {
        Ok(p) => p.into_response(),
        Err(e) => Page::from(e).into_response(),
    }
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    org: &str,
    q: &DashQuery,
) -> Result<Page, OpsError> {
    let s = &state.store;
    let a = &viewer.actor;
    let found = ops::visible_org(s, a, org).await?;
    let (w, range) = q.window()?;
    let org = found.name.clone();
    // The page's reads are independent: they run at once, on the pool's connections.
    let cross_org = async {
        match a.superuser {
            true => usage::cross_org(s, a, w).await.map(Some),
            false => Ok(None),
        }
    };
    let (report, limits, events, status, cross, nav) = tokio::try_join!(
        usage::report(s, a, &org, w),
        ops::limits::list(s, a, &org),
        usage::events(s, a, &org, q.cursor.as_deref(), None),
        usage::fleet_status(s, a),
        cross_org,
        async { Ok(viewer.nav(state, Some(&found), "dashboard").await) },
    )?;
    let mut banners = Vec::new();
    if status.degraded {
        banners.push(
            "A gateway reports degraded enforcement (fail-open) or has gone silent: limits may not be enforced right now."
                .to_owned(),
        );
    }
    if !status.unpriced_models.is_empty() {
        let names: Vec<&str> = status
            .unpriced_models
            .iter()
            .map(|m| m.model.as_str())
            .collect();
        banners.push(format!(
            "Models without a price were used in the last 30 days and billed with a fallback: {}.",
            names.join(", ")
        ));
    }
    let cross = cross.map(|mut c| {
        match q.sort.as_deref() {
            Some("tokens") => c.sort_by_key(|x| std::cmp::Reverse(x.total_tokens)),
            Some("requests") => c.sort_by_key(|x| std::cmp::Reverse(x.requests)),
            _ => {}
        }
        rows(&c)
    });
    let days: Vec<Day> = report
        .by_day
        .iter()
        .filter_map(|d| {
            Some(Day {
                day: chrono::NaiveDate::parse_from_str(&d.key, "%Y-%m-%d").ok()?,
                cost_micros: d.cost_micros,
                tokens: d.total_tokens,
            })
        })
        .collect();
    let t = &report.totals;
    let page = DashboardPage {
        title: format!("{org} usage"),
        nav: Some(nav),
        range,
        ranges: vec![
            ("this_month", "This month"),
            ("last_7_days", "Last 7 days"),
            ("last_30_days", "Last 30 days"),
            ("custom", "Custom"),
        ],
        from: w.from.to_string(),
        to: w.to.to_string(),
        banners,
        cards: Cards {
            cost: fmt::dollars(t.cost_micros),
            tokens: fmt::thousands(t.total_tokens),
            requests: fmt::thousands(t.requests),
            input: fmt::thousands(t.input_tokens),
            output: fmt::thousands(t.output_tokens + t.thinking_tokens),
        },
        limits: limits
            .iter()
            .map(|l| {
                let lt: store::LimitType = l
                    .limit_type
                    .parse()
                    .unwrap_or(store::LimitType::DailyRequests);
                let show = |raw: i64| match lt {
                    store::LimitType::MonthlyCost => fmt::dollars(raw),
                    _ => fmt::thousands(raw),
                };
                LimitBar {
                    name: limit_name(&l.limit_type),
                    enabled: l.enabled,
                    value: show(l.raw_value),
                    usage: show(l.raw_usage),
                    percent: fmt::percent(l.percent),
                    width: format!("{:.1}", l.percent.clamp(0.0, 100.0)),
                    state: l.state,
                    resets: fmt::utc(l.resets_at),
                    resets_iso: l.resets_at.to_rfc3339(),
                }
            })
            .collect(),
        chart: chart::svg(&chart::fill(w.from, w.to, &days)),
        tables: vec![
            Table {
                id: "provider",
                title: "provider",
                rows: rows(&report.by_provider),
            },
            Table {
                id: "model",
                title: "model",
                rows: rows(&report.by_model),
            },
            Table {
                id: "tool",
                title: "tool",
                rows: rows(&report.by_tool),
            },
            Table {
                id: "user",
                title: "user",
                rows: rows(&report.by_user),
            },
        ],
        cross,
        more: events.next_cursor.clone(),
        kept_days: Some(state.settings.event_retention_days).filter(|d| *d > 0),
        events: events
            .events
            .iter()
            .map(|e| EventRow {
                time: fmt::utc(e.occurred_at),
                iso: e.occurred_at.to_rfc3339(),
                user: e.user.clone().unwrap_or_default(),
                tool: e.tool.clone().unwrap_or_default(),
                model: e.model.clone(),
                operation: e.operation.clone(),
                status: e.status,
                tokens: fmt::thousands(e.total_tokens),
                cost: fmt::dollars(e.cost_micros),
                latency: format!("{} ms", fmt::thousands(e.latency_ms)),
            })
            .collect(),
        org,
    };
    Ok(Page::render(&page))
}

/// Appends one CSV line (fields quoted when they must be, never read as formulas).
fn push_row(out: &mut String, fields: &[String]) {
    let line: Vec<String> = fields.iter().map(|f| ops::export::csv_field(f)).collect();
    out.push_str(&line.join(","));
    out.push('\n');
}

/// `GET /orgs/{org}/export/{provider|model|tool|user|day|events}.csv`: the table's rows, in
/// plain numbers (cost in dollars with up to six decimals).
pub async fn export(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path((org, file)): Path<(String, String)>,
    Query(q): Query<DashQuery>,
) -> Response {
    match csv(&state, &viewer, &org, &file, &q).await {
        Ok((name, body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            body,
        )
            .into_response(),
        Err(e) => Page::from(e).into_response(),
    }
}

async fn csv(
    state: &AppState,
    viewer: &Viewer,
    org: &str,
    file: &str,
    q: &DashQuery,
) -> Result<(String, String), OpsError> {
    let (s, a) = (&state.store, &viewer.actor);
    let table = file
        .strip_suffix(".csv")
        .ok_or_else(|| OpsError::NotFound(format!("export {file:?}")))?;
    let found = ops::visible_org(s, a, org).await?;
    let mut out = String::new();
    if table == "events" {
        out.push_str("time_utc,request_id,user,tool,provider,model,operation,status,input_tokens,output_tokens,thinking_tokens,total_tokens,cost_usd,latency_ms\n");
        let page = usage::events(s, a, &found.name, q.cursor.as_deref(), None).await?;
        for e in page.events {
            let fields = [
                e.occurred_at.to_rfc3339(),
                e.request_id,
                e.user.unwrap_or_default(),
                e.tool.unwrap_or_default(),
                e.provider,
                e.model,
                e.operation,
                e.status.to_string(),
                e.input_tokens.to_string(),
                e.output_tokens.to_string(),
                e.thinking_tokens.to_string(),
                e.total_tokens.to_string(),
                fmt::dollars_plain(e.cost_micros),
                e.latency_ms.to_string(),
            ];
            push_row(&mut out, &fields);
        }
        return Ok((format!("{}-events.csv", found.name), out));
    }
    let (w, _) = q.window()?;
    let report = usage::report(s, a, &found.name, w).await?;
    let rows = match table {
        "provider" => report.by_provider,
        "model" => report.by_model,
        "tool" => report.by_tool,
        "user" => report.by_user,
        "day" => report.by_day,
        other => return Err(OpsError::NotFound(format!("export {other:?}"))),
    };
    out.push_str(&format!(
        "{table},requests,input_tokens,output_tokens,thinking_tokens,total_tokens,images,video_seconds,cost_usd,cost_share_percent\n"
    ));
    for r in rows {
        let fields = [
            key_label(&r.key),
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.thinking_tokens.to_string(),
            r.total_tokens.to_string(),
            r.images.to_string(),
            r.video_seconds.to_string(),
            fmt::dollars_plain(r.cost_micros),
            r.cost_share.to_string(),
        ];
        push_row(&mut out, &fields);
    }
    Ok((
        format!("{}-by-{table}-{}-{}.csv", found.name, w.from, w.to),
        out,
    ))
}

#[cfg(test)]
mod tests {
    use crate::ops::export::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
