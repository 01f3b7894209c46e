//! Bar charts drawn by the server as inline SVG (SPEC §13): axes, tick labels, a title for screen
//! readers, and always a text table beside them with the same numbers.

use maud::{Markup, html};

/// One bar: its label and value.
pub struct Point {
    pub label: String,
    pub value: f64,
    /// The value as the table shows it.
    pub shown: String,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 16.0;

/// A "nice" upper bound for the axis: 1, 2 or 5 times a power of ten, at least `max`.
pub fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if power * step >= max {
            return power * step;
        }
    }
    power * 10.0
}

/// A tick's text: whole numbers plainly, small ones with up to 4 decimals.
fn tick_text(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The chart and its table. `id` names the figure for `aria-labelledby`.
pub fn bar_chart(id: &str, title: &str, unit: &str, points: &[Point]) -> Markup {
    let max = points.iter().map(|p| p.value).fold(0.0, f64::max);
    let top = nice_ceiling(max);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let n = points.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.7).max(1.0);
    // At most about 8 labels under the axis.
    let every = (points.len() / 8).max(1);
    let title_id = format!("{id}-title");
    html! {
        figure.chart aria-labelledby=(title_id) {
            figcaption id=(title_id) { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby=(title_id)
                preserveAspectRatio="xMidYMid meet" {
                title { (title) }
                // The y axis with four ticks.
                @for i in 0..=4 {
                    @let v = top * f64::from(i) / 4.0;
                    @let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
                    line.grid x1=(LEFT) x2=(WIDTH - 8.0) y1=(y) y2=(y) {}
                    text.tick x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (tick_text(v)) }
                }
                line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(TOP + plot_h) {}
                line.axis x1=(LEFT) x2=(WIDTH - 8.0) y1=(TOP + plot_h) y2=(TOP + plot_h) {}
                text.unit x=(LEFT + 4.0) y=(TOP - 2.0) { (unit) }
                @for (i, p) in points.iter().enumerate() {
                    @let h = if top > 0.0 { plot_h * (p.value / top).clamp(0.0, 1.0) } else { 0.0 };
                    @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                    rect.bar x=(x) y=(TOP + plot_h - h) width=(bar) height=(h) {
                        title { (p.label) ": " (p.shown) }
                    }
                    @if i % every == 0 {
                        text.tick x=(x + bar / 2.0) y=(HEIGHT - 10.0) text-anchor="middle" { (axis_label(&p.label)) }
                    }
                }
            }
            @if points.is_empty() {
                p.muted { "No data for this period yet." }
            }
            details {
                summary { "Table: " (title) }
                table {
                caption { (title) }
                thead { tr { th scope="col" { "" } th scope="col" { (unit) } } }
                tbody {
                    @for p in points {
                        tr { th scope="row" { (p.label) } td { (p.shown) } }
                    }
                }
                }
            }
        }
    }
}

/// Under the axis a date shows as its day of the month; other labels are cut to 12 characters.
fn axis_label(label: &str) -> String {
    let b = label.as_bytes();
    let date = b.len() == 10 && b.get(4) == Some(&b'-') && b.get(7) == Some(&b'-');
    if date {
        label.get(8..).unwrap_or(label).to_string()
    } else if label.chars().count() > 12 {
        format!("{}…", label.chars().take(11).collect::<String>())
    } else {
        label.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_ends_at_a_round_number_above_the_largest_bar() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(0.0031), 0.005);
        assert_eq!(nice_ceiling(4200.0), 5000.0);
    }

    #[test]
    fn a_chart_has_its_bars_labels_and_table_and_escapes_labels() {
        let points = vec![
            Point {
                label: "2026-01-01".into(),
                value: 3.0,
                shown: "3".into(),
            },
            Point {
                label: "<b>".into(),
                value: 1.0,
                shown: "1".into(),
            },
        ];
        let svg = bar_chart("daily", "Requests per day", "requests", &points).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("Requests per day"));
        assert!(svg.contains("<table>") && svg.contains("<details>"));
        assert!(svg.contains(">01</text>"), "days under the axis: {svg}");
        assert_eq!(axis_label("gpt-4o-mini-2024-07-18"), "gpt-4o-mini…");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(
            bar_chart("e", "Empty", "x", &[])
                .into_string()
                .contains("No data")
        );
    }

    proptest::proptest! {
        #[test]
        fn the_ceiling_is_never_below_the_value(v in 0.0f64..1e12) {
            let c = nice_ceiling(v);
            proptest::prop_assert!(c >= v && c <= v.max(1e-300) * 10.0 + 1.0);
        }
    }
}
