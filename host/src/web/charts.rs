//! Charts as SVG, drawn on the server from the API's figures: stacked bars
//! (usage by day and plugin) and lines with an optional band (MRR, the
//! forecast). The SVG scales to its box; labels are escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;

/// The colours of the series, in order.
const PALETTE: [&str; 8] = [
    "#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Number(number) => number.as_f64().unwrap_or(0.0),
        Value::String(text) => text.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// A round upper bound for the axis, so its ticks read well.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|bound| *bound >= max)
        .unwrap_or(10.0 * magnitude)
}

fn tick_label(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn open(svg: &mut String, label: &str, max: f64) {
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"##,
        escape(label)
    );
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        let y = y_of(value, max);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="#6b7280">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(value)
        );
    }
}

fn y_of(value: f64, max: f64) -> f64 {
    TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - value / max)
}

/// Labels along the x axis, at most about ten of them.
fn x_labels(svg: &mut String, labels: &[String], x_of: impl Fn(usize) -> f64) {
    let every = labels.len().div_ceil(10).max(1);
    for (index, label) in labels.iter().enumerate() {
        if index % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11" fill="#6b7280">{}</text>"##,
                x_of(index),
                HEIGHT - BOTTOM + 16.0,
                escape(label)
            );
        }
    }
}

fn legend(svg: &mut String, names: &[String]) {
    let mut x = LEFT;
    for (index, name) in names.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{}" font-size="11" fill="#374151">{}</text>"##,
            HEIGHT - 14.0,
            x + 14.0,
            HEIGHT - 5.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

fn empty(label: &str) -> String {
    format!(
        r##"<svg class="chart" viewBox="0 0 {WIDTH} 60" role="img" aria-label="{0}" xmlns="http://www.w3.org/2000/svg"><text x="{1}" y="34" text-anchor="middle" font-size="13" fill="#6b7280">{0}: nothing yet</text></svg>"##,
        escape(label),
        WIDTH / 2.0
    )
}

/// Bars by category (x), stacked by series.
pub fn stacked_bars(label: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> String {
    if categories.is_empty() || series.is_empty() {
        return empty(label);
    }
    let totals: Vec<f64> = (0..categories.len())
        .map(|index| series.iter().map(|(_, values)| values[index]).sum())
        .collect();
    let max = nice_max(totals.iter().copied().fold(0.0, f64::max));
    let mut svg = String::new();
    open(&mut svg, label, max);
    let slot = (WIDTH - LEFT - RIGHT) / categories.len() as f64;
    let bar = (slot * 0.7).max(1.0);
    let x_of = |index: usize| LEFT + slot * (index as f64 + 0.5);
    for index in 0..categories.len() {
        let mut base = 0.0;
        for (series_index, (name, values)) in series.iter().enumerate() {
            let value = values[index];
            if value <= 0.0 {
                continue;
            }
            let (top, bottom) = (y_of(base + value, max), y_of(base, max));
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"##,
                x_of(index) - bar / 2.0,
                bottom - top,
                PALETTE[series_index % PALETTE.len()],
                escape(&categories[index]),
                escape(name),
                tick_label(value),
            );
            base += value;
        }
    }
    x_labels(&mut svg, categories, x_of);
    let names: Vec<String> = series.iter().map(|(name, _)| name.clone()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// A series' values by x label; `None` where it has none.
type Points = [Option<f64>];

/// Lines over shared x labels; `band` shades between a low and a high
/// line (a forecast's interval).
pub fn lines(
    label: &str,
    labels: &[String],
    series: &[(String, Vec<Option<f64>>)],
    band: Option<(&Points, &Points)>,
) -> String {
    let values = series
        .iter()
        .flat_map(|(_, values)| values.iter().flatten())
        .chain(band.iter().flat_map(|(_, high)| high.iter().flatten()));
    let max = nice_max(values.copied().fold(0.0, f64::max));
    if labels.is_empty() {
        return empty(label);
    }
    let mut svg = String::new();
    open(&mut svg, label, max);
    let step = (WIDTH - LEFT - RIGHT) / (labels.len().max(2) - 1) as f64;
    let x_of = |index: usize| LEFT + step * index as f64;
    if let Some((low, high)) = band {
        let upper: Vec<(usize, f64)> = high
            .iter()
            .enumerate()
            .filter_map(|(index, value)| value.map(|value| (index, value)))
            .collect();
        let lower: Vec<(usize, f64)> = low
            .iter()
            .enumerate()
            .filter_map(|(index, value)| value.map(|value| (index, value.max(0.0))))
            .collect();
        if !upper.is_empty() && !lower.is_empty() {
            let points: Vec<String> = upper
                .iter()
                .chain(lower.iter().rev())
                .map(|(index, value)| format!("{:.1},{:.1}", x_of(*index), y_of(*value, max)))
                .collect();
            let _ = write!(
                svg,
                r##"<polygon points="{}" fill="#2563eb" fill-opacity="0.12"/>"##,
                points.join(" ")
            );
        }
    }
    for (series_index, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[series_index % PALETTE.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| {
                value.map(|value| format!("{:.1},{:.1}", x_of(index), y_of(value, max)))
            })
            .collect();
        let dash = if series_index > 0 {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}><title>{}</title></polyline>"##,
            points.join(" "),
            escape(name)
        );
    }
    x_labels(&mut svg, labels, x_of);
    let names: Vec<String> = series.iter().map(|(name, _)| name.clone()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// Credits charged by day, stacked by plugin, from `GET /usage`.
pub fn usage_by_day(usage: &Value) -> String {
    let rows = usage["usage"].as_array().cloned().unwrap_or_default();
    let mut by_plugin: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut days: Vec<String> = Vec::new();
    for row in &rows {
        let day = row["day"].as_str().unwrap_or_default().to_owned();
        if !days.contains(&day) {
            days.push(day.clone());
        }
        let plugin = row["plugin"].as_str().unwrap_or_default().to_owned();
        *by_plugin.entry(plugin).or_default().entry(day).or_default() += number(&row["charged"]);
    }
    days.sort();
    let series: Vec<(String, Vec<f64>)> = by_plugin
        .into_iter()
        .map(|(plugin, per_day)| {
            let values = days
                .iter()
                .map(|day| per_day.get(day).copied().unwrap_or(0.0))
                .collect();
            (plugin, values)
        })
        .collect();
    let labels: Vec<String> = days
        .iter()
        .map(|day| day.get(5..).unwrap_or(day).to_owned())
        .collect();
    stacked_bars("Credits charged by day and plugin", &labels, &series)
}

/// MRR by month, from `GET /billing/revenue`.
pub fn mrr(revenue: &Value) -> String {
    let months = revenue["mrr"]["months"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let labels: Vec<String> = months
        .iter()
        .map(|month| month["month"].as_str().unwrap_or_default().to_owned())
        .collect();
    let values: Vec<Option<f64>> = months
        .iter()
        .map(|month| Some(number(&month["mrr_end"])))
        .collect();
    lines("MRR by month", &labels, &[("MRR".to_owned(), values)], None)
}

/// The month after a `YYYY-MM` key.
fn next_month(key: &str) -> Option<String> {
    let day = chrono::NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d").ok()?;
    Some((day + chrono::Months::new(1)).format("%Y-%m").to_string())
}

/// Revenue by month, every month from the report's first to the last
/// complete one (a month without revenue at zero), then the forecast with
/// its band, from `GET /billing/revenue`.
pub fn forecast(revenue: &Value) -> String {
    let mut by_month: BTreeMap<String, f64> = BTreeMap::new();
    if revenue["granularity"].as_str().unwrap_or("month") == "month" {
        for period in revenue["series"].as_array().into_iter().flatten() {
            let month = period["period"].as_str().unwrap_or_default();
            *by_month.entry(month.to_owned()).or_default() += number(&period["revenue"]);
        }
    }
    let ahead = revenue["forecast"]["months"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first = revenue["from"].as_str().unwrap_or_default().to_owned();
    // History ends where the forecast starts: the current month is not
    // complete, and the forecast is made from complete months only.
    let end = match ahead.first().and_then(|month| month["month"].as_str()) {
        Some(start) => start.to_owned(),
        None => revenue["to"]
            .as_str()
            .and_then(next_month)
            .unwrap_or_default(),
    };
    let mut labels = Vec::new();
    let (mut actual, mut predicted, mut low, mut high) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut month = first;
    while !month.is_empty() && month < end && labels.len() < 240 {
        actual.push(Some(by_month.get(&month).copied().unwrap_or(0.0)));
        predicted.push(None);
        low.push(None);
        high.push(None);
        labels.push(month.clone());
        month = next_month(&month).unwrap_or_default();
    }
    // The forecast line starts from the last complete month.
    if let Some(last) = actual.last().copied().flatten() {
        *predicted.last_mut().expect("as many as actual") = Some(last);
        *low.last_mut().expect("as many as actual") = Some(last);
        *high.last_mut().expect("as many as actual") = Some(last);
    }
    for month in &ahead {
        labels.push(month["month"].as_str().unwrap_or_default().to_owned());
        actual.push(None);
        predicted.push(Some(number(&month["revenue"])));
        low.push(Some(number(&month["low"])));
        high.push(Some(number(&month["high"])));
    }
    lines(
        "Revenue by month, with the forecast and its band",
        &labels,
        &[
            ("Revenue".to_owned(), actual),
            ("Forecast".to_owned(), predicted),
        ],
        Some((&low, &high)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_by_plugin_and_escape_labels() {
        let usage = serde_json::json!({"usage": [
            {"day": "2026-12-01", "plugin": "csv-leads", "charged": "3"},
            {"day": "2026-12-01", "plugin": "<email>", "charged": "2"},
            {"day": "2026-12-02", "plugin": "csv-leads", "charged": "4.5"},
        ]});
        let svg = usage_by_day(&usage);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(
            svg.matches("<rect x=").count() - 2,
            3,
            "three bars and two legend keys: {svg}"
        );
        assert!(svg.contains("&lt;email&gt;"), "{svg}");
        assert!(!svg.contains("<email>"), "{svg}");
        assert!(svg.contains("12-02 csv-leads: 4.5"), "{svg}");
    }

    #[test]
    fn the_forecast_fills_empty_months_and_starts_after_the_last_complete_one() {
        let revenue = serde_json::json!({
            "from": "2026-01", "to": "2026-05", "granularity": "month",
            "series": [
                {"period": "2026-01", "revenue": "100"},
                {"period": "2026-03", "revenue": "300"},
                {"period": "2026-05", "revenue": "50"},
            ],
            "forecast": {"months": [
                {"month": "2026-05", "revenue": "400", "low": "350", "high": "450"},
                {"month": "2026-06", "revenue": "500", "low": "400", "high": "600"},
            ]},
        });
        let svg = forecast(&revenue);
        // January to April, then the two forecast months: May once.
        for month in [
            "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06",
        ] {
            assert_eq!(
                svg.matches(&format!(">{month}<")).count(),
                1,
                "{month}: {svg}"
            );
        }
        // Six points on the revenue line: Jan 100, Feb 0, Mar 300, Apr 0.
        let revenue_line = svg.split("<polyline").nth(1).unwrap();
        assert_eq!(
            revenue_line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .split(' ')
                .count(),
            4,
            "{svg}"
        );
    }

    #[test]
    fn an_empty_report_says_so() {
        let svg = usage_by_day(&serde_json::json!({"usage": []}));
        assert!(svg.contains("nothing yet"), "{svg}");
    }

    #[test]
    fn the_axis_ends_at_a_round_number() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(2_400.0), 2_500.0);
    }
}
