//! Exports an organization's usage events over UTC days as CSV or JSON lines, a page at a time
//! (constant memory, any size): owners and superusers take the raw events out before retention
//! deletes them. Totals never need this: the rollups keep them.

use std::io::Write;

use chrono::Duration;
use serde_json::Value;
use store::{Role, Store, UsageEvent};

use super::{parse, visible_org, Actor, OpsError};

/// Events read per page.
pub const PAGE: i64 = 1_000;

/// An export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line, then one line per event (formula-looking cells quoted).
    Csv,
    /// One JSON object per line, as the API shows an event.
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = OpsError;
    fn from_str(s: &str) -> Result<Format, OpsError> {
        match s.trim() {
            "csv" => Ok(Format::Csv),
            "jsonl" => Ok(Format::Jsonl),
            other => Err(OpsError::invalid(
                "format",
                format!("must be csv or jsonl, got {other:?}"),
            )),
        }
    }
}

/// A CSV cell: quoted when it holds a separator, and prefixed with `'` when a spreadsheet would
/// read it as a formula.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn fields(e: &UsageEvent) -> serde_json::Map<String, Value> {
    match serde_json::to_value(e) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Writes the org's events of the UTC days `from` to `to` (inclusive), oldest first; how many.
pub async fn export(
    store: &Store,
    actor: &Actor,
    org: &str,
    (from, to): (&str, &str),
    format: Format,
    out: &mut impl Write,
) -> Result<u64, OpsError> {
    let org = visible_org(store, actor, org).await?;
    if !actor.superuser && actor.role_in(org.id) != Some(Role::Owner) {
        return Err(OpsError::Forbidden(
            "only the organization's owners (and superusers) may export its events".into(),
        ));
    }
    let (from, to) = (parse::day("from", from)?, parse::day("to", to)?);
    if to < from {
        return Err(OpsError::invalid("to", "must not be before from"));
    }
    let start = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() + Duration::days(1);
    let io = |e: std::io::Error| OpsError::Internal(format!("writing the export: {e}"));
    if format == Format::Csv {
        let header: Vec<String> = fields(&UsageEvent::default()).keys().cloned().collect();
        writeln!(out, "{}", header.join(",")).map_err(io)?;
    }
    let mut cursor = None;
    let mut n = 0u64;
    loop {
        let page = store
            .export_page(org.id, start, end, cursor.as_ref(), PAGE)
            .await?;
        for e in &page.events {
            match format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut *out, e).map_err(|e| io(e.into()))?;
                    writeln!(out).map_err(io)?;
                }
                Format::Csv => {
                    let cells: Vec<String> = fields(e)
                        .values()
                        .map(|v| match v {
                            Value::Null => String::new(),
                            Value::String(s) => csv_field(s),
                            other => other.to_string(),
                        })
                        .collect();
                    writeln!(out, "{}", cells.join(",")).map_err(io)?;
                }
            }
            n += 1;
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(n),
        }
    }
}
