//! The dashboard's chart, drawn on the server as SVG: cost per UTC day as bars and tokens per
//! day as a line on its own scale, every day of the window present (days without usage are 0).
//! No script and no chart library; the SVG carries a title and a description for screen readers.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::NaiveDate;

use super::fmt;

/// One day's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// The UTC day.
    pub day: NaiveDate,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
    /// All tokens.
    pub tokens: i64,
}

/// Every day from `from` to `to`, with the values of `days` (missing days are 0).
pub fn fill(from: NaiveDate, to: NaiveDate, days: &[Day]) -> Vec<Day> {
    let by_day: HashMap<NaiveDate, &Day> = days.iter().map(|d| (d.day, d)).collect();
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|day| {
            by_day.get(&day).map_or(
                Day {
                    day,
                    cost_micros: 0,
                    tokens: 0,
                },
                |d| **d,
            )
        })
        .collect()
}

const W: f64 = 720.0;
const H: f64 = 220.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 64.0;
const PAD_T: f64 = 12.0;
const PAD_B: f64 = 28.0;

/// The SVG of a window of days.
pub fn svg(days: &[Day]) -> String {
    let n = days.len().max(1) as f64;
    let max_cost = days.iter().map(|d| d.cost_micros).max().unwrap_or(0).max(1) as f64;
    let max_tokens = days.iter().map(|d| d.tokens).max().unwrap_or(0).max(1) as f64;
    let plot_w = W - PAD_L - PAD_R;
    let plot_h = H - PAD_T - PAD_B;
    let slot = plot_w / n;
    let bar = (slot * 0.7).max(1.0);
    let total_cost: i64 = days.iter().map(|d| d.cost_micros).sum();
    let total_tokens: i64 = days.iter().map(|d| d.tokens).sum();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Cost and tokens per UTC day</title><desc id="chart-desc">{} days: {} in total, {} tokens. Bars: cost per day; line: tokens per day.</desc>"#,
        days.len(),
        fmt::dollars(total_cost),
        fmt::thousands(total_tokens),
    );
    // Axes and their maxima.
    let _ = write!(
        s,
        r#"<line class="axis" x1="{PAD_L}" y1="{y0}" x2="{x1}" y2="{y0}"/><text class="label" x="{lx}" y="{ty}" text-anchor="end">{}</text><text class="label" x="{lx}" y="{y0}" text-anchor="end">$0</text><text class="label tokens" x="{rx}" y="{ty}">{} tok</text>"#,
        fmt::dollars(max_cost as i64),
        fmt::thousands(max_tokens as i64),
        y0 = H - PAD_B,
        x1 = W - PAD_R,
        lx = PAD_L - 6.0,
        rx = W - PAD_R + 6.0,
        ty = PAD_T + 10.0,
    );
    let mut points = String::new();
    for (i, d) in days.iter().enumerate() {
        let x = PAD_L + slot * i as f64;
        let h = plot_h * d.cost_micros as f64 / max_cost;
        let _ = write!(
            s,
            r#"<rect class="day" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{h:.1}"><title>{}: {}, {} tokens</title></rect>"#,
            x + (slot - bar) / 2.0,
            H - PAD_B - h,
            d.day,
            fmt::dollars(d.cost_micros),
            fmt::thousands(d.tokens),
        );
        let ty = H - PAD_B - plot_h * d.tokens as f64 / max_tokens;
        let _ = write!(points, "{:.1},{ty:.1} ", x + slot / 2.0);
    }
    let _ = write!(
        s,
        r#"<polyline class="line" fill="none" points="{}"/>"#,
        points.trim_end()
    );
    // First and last day under the axis.
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            r#"<text class="label" x="{PAD_L}" y="{y}">{}</text><text class="label" x="{x}" y="{y}" text-anchor="end">{}</text>"#,
            first.day,
            last.day,
            y = H - 8.0,
            x = W - PAD_R,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_of_the_window_is_drawn() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let days = fill(
            d("2026-11-28"),
            d("2026-12-02"),
            &[Day {
                day: d("2026-11-30"),
                cost_micros: 2_000_000,
                tokens: 500,
            }],
        );
        assert_eq!(days.len(), 5);
        assert_eq!(days[2].cost_micros, 2_000_000);
        assert_eq!(days[0].tokens, 0);
        let svg = svg(&days);
        assert_eq!(svg.matches("<rect class=\"day\"").count(), 5);
        assert!(svg.contains("2026-11-30: $2.00, 500 tokens"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("role=\"img\""), "labelled for screen readers");
    }
}
