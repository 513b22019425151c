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

/// An export that may go ahead: the org and window checked, the actor allowed.
#[derive(Debug, Clone)]
pub struct Export {
    /// The organization's name (for file names).
    pub org: String,
    org_id: i64,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    /// The format.
    pub format: Format,
    cursor: Option<store::EventCursor>,
    done: bool,
}

/// Checks an export of the org's events of the UTC days `from` to `to` (inclusive): owners and
/// superusers only.
pub async fn prepare(
    store: &Store,
    actor: &Actor,
    org: &str,
    (from, to): (&str, &str),
    format: Format,
) -> Result<Export, OpsError> {
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
    Ok(Export {
        org: org.name,
        org_id: org.id,
        start: from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
        end: to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() + Duration::days(1),
        format,
        cursor: None,
        done: false,
    })
}

impl Export {
    /// The CSV header line (none for JSON lines).
    pub fn header(&self) -> Option<Vec<u8>> {
        (self.format == Format::Csv).then(|| {
            let header: Vec<String> = fields(&UsageEvent::default()).keys().cloned().collect();
            format!("{}\n", header.join(",")).into_bytes()
        })
    }

    /// The next page of lines and how many events it holds; `None` once every event is out.
    pub async fn next_page(&mut self, store: &Store) -> Result<Option<(Vec<u8>, u64)>, OpsError> {
        if self.done {
            return Ok(None);
        }
        let page = store
            .export_page(
                self.org_id,
                self.start,
                self.end,
                self.cursor.as_ref(),
                PAGE,
            )
            .await?;
        let mut out = Vec::with_capacity(page.events.len() * 400);
        for e in &page.events {
            match self.format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut out, e)
                        .map_err(|e| OpsError::Internal(format!("encoding an event: {e}")))?;
                    out.push(b'\n');
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
                    out.extend_from_slice(cells.join(",").as_bytes());
                    out.push(b'\n');
                }
            }
        }
        self.cursor = page.next;
        self.done = self.cursor.is_none();
        Ok(Some((out, page.events.len() as u64)))
    }
}

/// Writes the org's events of the UTC days `from` to `to` (inclusive), oldest first; how many.
pub async fn export(
    store: &Store,
    actor: &Actor,
    org: &str,
    window: (&str, &str),
    format: Format,
    out: &mut impl Write,
) -> Result<u64, OpsError> {
    let mut export = prepare(store, actor, org, window, format).await?;
    let io = |e: std::io::Error| OpsError::Internal(format!("writing the export: {e}"));
    if let Some(h) = export.header() {
        out.write_all(&h).map_err(io)?;
    }
    let mut n = 0;
    while let Some((bytes, count)) = export.next_page(store).await? {
        out.write_all(&bytes).map_err(io)?;
        n += count;
    }
    Ok(n)
}
