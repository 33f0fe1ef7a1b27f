//! Grouped bar charts as self-contained SVG, for the energy results.
//!
//! - [`BarChart`]: the chart's data: a title, the y axis's unit, the groups
//!   along the x axis (for example sync modes), one series of values per
//!   group for each bar colour (for example radios), and dashed reference
//!   lines (for example a target). [`BarChart::to_svg`] draws it.
//! - [`nice_ticks`]: the y axis's ticks, at steps of 1, 2, 2.5 or 5 × 10^k.
//!
//! The SVG is version 1.1, 760 × 420 px, with no scripts, styles or external
//! references, so it renders the same in a browser, on GitHub and in an
//! image viewer.

use std::fmt;

/// The chart's width, in px.
const WIDTH: f64 = 760.0;
/// The chart's height, in px.
const HEIGHT: f64 = 420.0;
/// The plot area's left edge (right of the y tick labels), in px.
const PLOT_LEFT: f64 = 72.0;
/// The plot area's right edge (left of the legend), in px.
const PLOT_RIGHT: f64 = 590.0;
/// The plot area's top edge (below the title), in px.
const PLOT_TOP: f64 = 56.0;
/// The plot area's bottom edge: the x axis, in px.
const PLOT_BOTTOM: f64 = 360.0;
/// The share of a group's width its bars take (the rest separates groups).
const GROUP_FILL: f64 = 0.8;
/// The legend's left edge, in px.
const LEGEND_LEFT: f64 = 606.0;
/// The height of one legend row, in px.
const LEGEND_ROW: f64 = 20.0;
/// How many steps the y axis aims for.
const TARGET_STEPS: f64 = 5.0;
/// At most this many ticks, whatever the values.
const MAX_TICKS: u32 = 12;

/// Series fills, in order, cycled past the last: the Okabe–Ito palette, which
/// stays distinct under the common colour-vision deficiencies.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// A grouped bar chart: for each group along the x axis, one bar per series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarChart {
    /// The chart's title, shown above it and as the SVG's `<title>`.
    pub title: String,
    /// The y axis's label: what the values are and their unit (for example
    /// "% of a 2,700 mAh battery per day").
    pub unit: String,
    /// The groups along the x axis, left to right (for example sync modes).
    pub groups: Vec<String>,
    /// The series, one bar colour each: a name for the legend and one value
    /// per group, in the unit of [`unit`](BarChart::unit), in the order of
    /// [`groups`](BarChart::groups). Values past the last group are ignored; a
    /// missing or non-finite value is drawn as 0 and labelled "n/a"; a
    /// negative one is drawn as 0.
    pub series: Vec<(String, Vec<f64>)>,
    /// Horizontal dashed lines: a label and the value (in the unit of
    /// [`unit`](BarChart::unit)) the line is drawn at. Non-finite values are
    /// skipped.
    pub reference_lines: Vec<(String, f64)>,
}

impl BarChart {
    /// The chart as a self-contained SVG 1.1 document (760 × 420 px), ending
    /// in a newline: title, axes with grid lines at [`nice_ticks`], the bars
    /// with their values (two decimals) above them, the group labels, a
    /// legend, and the reference lines with their labels.
    #[must_use]
    pub fn to_svg(&self) -> String {
        Svg(self).to_string()
    }

    /// The largest finite value drawn (bars and reference lines), or 0.
    fn max_value(&self) -> f64 {
        let bars = self
            .series
            .iter()
            .flat_map(|(_, values)| values.iter().take(self.groups.len()));
        let lines = self.reference_lines.iter().map(|(_, value)| value);
        bars.chain(lines)
            .copied()
            .filter(|value| value.is_finite())
            .fold(0.0, f64::max)
    }
}

/// The y axis's ticks for values up to `max`: from 0 up to the first multiple
/// of the step at or above `max`, at a step of 1, 2, 2.5 or 5 × 10^k chosen
/// for about five steps. A `max` that is not positive and finite counts as 1.
///
/// For example a `max` of 9.7 gives 0, 2, 4, 6, 8, 10 and one of 0.8 gives
/// 0, 0.2, 0.4, 0.6, 0.8.
#[must_use]
pub fn nice_ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_step(max);
    let mut ticks = Vec::new();
    for index in 0..MAX_TICKS {
        let tick = f64::from(index) * step;
        ticks.push(tick);
        if tick >= max * (1.0 - 1e-9) {
            break;
        }
    }
    ticks
}

/// The nice step (1, 2, 2.5 or 5 × 10^k) that splits `max` (positive, finite)
/// into at most about five steps; `max` itself if no such step is
/// representable.
fn nice_step(max: f64) -> f64 {
    let raw = max / TARGET_STEPS;
    let magnitude = 10_f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let factor = [1.0, 2.0, 2.5, 5.0]
        .into_iter()
        .find(|factor| normalized <= factor * (1.0 + 1e-9))
        .unwrap_or(10.0);
    let step = factor * magnitude;
    if step.is_finite() && step > 0.0 {
        step
    } else {
        max
    }
}

/// The decimals a tick label needs at `step`: none for whole steps, one more
/// for each power of ten below 1, and one more for a 2.5 × 10^k step below 10.
fn tick_decimals(step: f64) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the exponent of a finite f64 is within ±324"
    )]
    let exponent = step.log10().floor() as i32;
    let quarter = (step / 10_f64.powi(exponent) - 2.5).abs() < 1e-9;
    usize::try_from(i32::from(quarter) - exponent).unwrap_or(0)
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for SVG text and attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A chart being written out as SVG.
struct Svg<'chart>(&'chart BarChart);

impl Svg<'_> {
    fn header(formatter: &mut fmt::Formatter<'_>, title: &str) -> fmt::Result {
        writeln!(
            formatter,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" \
             width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">"
        )?;
        writeln!(formatter, "<title>{title}</title>")?;
        writeln!(
            formatter,
            "<rect class=\"background\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#FFFFFF\"/>"
        )?;
        writeln!(
            formatter,
            "<text class=\"title\" x=\"{x:.1}\" y=\"28\" text-anchor=\"middle\" \
             font-size=\"16\" font-weight=\"bold\">{title}</text>",
            x = f64::midpoint(PLOT_LEFT, PLOT_RIGHT)
        )
    }

    /// Grid lines and labels at each tick, the axes, and the unit label.
    fn axes(
        formatter: &mut fmt::Formatter<'_>,
        ticks: &[f64],
        y_of: &impl Fn(f64) -> f64,
        unit: &str,
    ) -> fmt::Result {
        let step = ticks.get(1).copied().unwrap_or(1.0);
        let decimals = tick_decimals(step);
        for &tick in ticks {
            let y = y_of(tick);
            writeln!(
                formatter,
                "<line class=\"grid\" x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" \
                 y2=\"{y:.1}\" stroke=\"#DDDDDD\" stroke-width=\"1\"/>"
            )?;
            writeln!(
                formatter,
                "<text class=\"tick\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"end\" \
                 dominant-baseline=\"middle\">{tick:.decimals$}</text>",
                x = PLOT_LEFT - 8.0
            )?;
        }
        writeln!(
            formatter,
            "<line class=\"axis\" x1=\"{PLOT_LEFT}\" y1=\"{PLOT_TOP}\" x2=\"{PLOT_LEFT}\" \
             y2=\"{PLOT_BOTTOM}\" stroke=\"#333333\" stroke-width=\"1\"/>"
        )?;
        writeln!(
            formatter,
            "<line class=\"axis\" x1=\"{PLOT_LEFT}\" y1=\"{PLOT_BOTTOM}\" x2=\"{PLOT_RIGHT}\" \
             y2=\"{PLOT_BOTTOM}\" stroke=\"#333333\" stroke-width=\"1\"/>"
        )?;
        let middle = f64::midpoint(PLOT_TOP, PLOT_BOTTOM);
        writeln!(
            formatter,
            "<text class=\"unit\" x=\"18\" y=\"{middle:.1}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 18 {middle:.1})\">{unit}</text>",
            unit = escape(unit)
        )
    }

    /// The bars with their values, and the group labels under the axis.
    fn bars(&self, formatter: &mut fmt::Formatter<'_>, y_of: &impl Fn(f64) -> f64) -> fmt::Result {
        let chart = self.0;
        let groups = chart.groups.len().max(1);
        let group_width = (PLOT_RIGHT - PLOT_LEFT) / count(groups);
        let bar_width = group_width * GROUP_FILL / count(chart.series.len().max(1));
        for (group_index, group) in chart.groups.iter().enumerate() {
            let group_left = PLOT_LEFT + group_width * count(group_index);
            let bars_left = group_left + group_width * (1.0 - GROUP_FILL) / 2.0;
            for (series_index, (name, values)) in chart.series.iter().enumerate() {
                let value = values.get(group_index).copied().filter(|v| v.is_finite());
                let drawn = value.unwrap_or(0.0).max(0.0);
                let label = value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
                let x = bars_left + bar_width * count(series_index);
                let top = y_of(drawn);
                let fill = PALETTE[series_index % PALETTE.len()];
                writeln!(
                    formatter,
                    "<rect class=\"bar\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar_width:.1}\" \
                     height=\"{height:.1}\" fill=\"{fill}\"><title>{name}, {group}: {label}</title></rect>",
                    height = PLOT_BOTTOM - top,
                    name = escape(name),
                    group = escape(group),
                )?;
                writeln!(
                    formatter,
                    "<text class=\"value\" x=\"{center:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" \
                     font-size=\"10\">{label}</text>",
                    center = x + bar_width / 2.0,
                    y = top - 4.0,
                )?;
            }
            writeln!(
                formatter,
                "<text class=\"group\" x=\"{center:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{group}</text>",
                center = group_left + group_width / 2.0,
                y = PLOT_BOTTOM + 20.0,
                group = escape(group),
            )?;
        }
        Ok(())
    }

    /// A swatch and the name of each series, right of the plot.
    fn legend(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, _)) in self.0.series.iter().enumerate() {
            let y = PLOT_TOP + LEGEND_ROW * count(index);
            writeln!(
                formatter,
                "<rect class=\"swatch\" x=\"{LEGEND_LEFT}\" y=\"{y:.1}\" width=\"12\" \
                 height=\"12\" fill=\"{fill}\"/>",
                fill = PALETTE[index % PALETTE.len()]
            )?;
            writeln!(
                formatter,
                "<text class=\"legend\" x=\"{x:.1}\" y=\"{text_y:.1}\">{name}</text>",
                x = LEGEND_LEFT + 18.0,
                text_y = y + 10.5,
                name = escape(name)
            )?;
        }
        Ok(())
    }

    /// Each reference line, dashed across the plot, with its label above its
    /// right end.
    fn reference_lines(
        &self,
        formatter: &mut fmt::Formatter<'_>,
        y_of: &impl Fn(f64) -> f64,
    ) -> fmt::Result {
        for (label, value) in &self.0.reference_lines {
            if !value.is_finite() {
                continue;
            }
            let y = y_of(value.max(0.0));
            writeln!(
                formatter,
                "<line class=\"reference\" x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" \
                 y2=\"{y:.1}\" stroke=\"#444444\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>"
            )?;
            writeln!(
                formatter,
                "<text class=\"reference\" x=\"{x:.1}\" y=\"{label_y:.1}\" text-anchor=\"end\" \
                 fill=\"#444444\">{label}</text>",
                x = PLOT_RIGHT - 4.0,
                label_y = y - 5.0,
                label = escape(label)
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Svg<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chart = self.0;
        let ticks = nice_ticks(chart.max_value());
        let top = ticks
            .last()
            .copied()
            .filter(|top| *top > 0.0)
            .unwrap_or(1.0);
        let y_of = |value: f64| PLOT_BOTTOM - value / top * (PLOT_BOTTOM - PLOT_TOP);

        Svg::header(formatter, &escape(&chart.title))?;
        Svg::axes(formatter, &ticks, &y_of, &chart.unit)?;
        self.bars(formatter, &y_of)?;
        self.legend(formatter)?;
        self.reference_lines(formatter, &y_of)?;
        writeln!(formatter, "</svg>")
    }
}

/// `n` as an f64, for layout arithmetic.
fn count(n: usize) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "group and series counts are far below 2^53"
    )]
    let n = n as f64;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_ticks(max: f64, expected: &[f64]) {
        let ticks = nice_ticks(max);
        assert_eq!(ticks.len(), expected.len(), "ticks for {max}: {ticks:?}");
        for (tick, want) in ticks.iter().zip(expected) {
            assert!((tick - want).abs() < 1e-9, "ticks for {max}: {ticks:?}");
        }
    }

    fn modes_by_radio() -> BarChart {
        BarChart {
            title: "Energy per day".to_owned(),
            unit: "% of a 2,700 mAh battery per day".to_owned(),
            groups: vec!["eager".to_owned(), "balanced".to_owned()],
            series: vec![
                ("lte".to_owned(), vec![9.7, 1.25]),
                ("3g".to_owned(), vec![6.0, 0.5]),
                ("wifi".to_owned(), vec![0.4, 0.1]),
            ],
            reference_lines: vec![("target balanced ≤ 2 %".to_owned(), 2.0)],
        }
    }

    #[test]
    fn nice_ticks_use_steps_of_one_two_two_and_a_half_or_five() {
        // 9.7 / 5 = 1.94 → step 2; first multiple ≥ 9.7 is 10.
        assert_ticks(9.7, &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        // 0.8 / 5 = 0.16 → step 0.2; 0.8 is a multiple.
        assert_ticks(0.8, &[0.0, 0.2, 0.4, 0.6, 0.8]);
        // 12 / 5 = 2.4 → step 2.5; first multiple ≥ 12 is 12.5.
        assert_ticks(12.0, &[0.0, 2.5, 5.0, 7.5, 10.0, 12.5]);
        // 23 / 5 = 4.6 → step 5; first multiple ≥ 23 is 25.
        assert_ticks(23.0, &[0.0, 5.0, 10.0, 15.0, 20.0, 25.0]);
        // 450 / 5 = 90 → normalized 9 → step 100; up to 500.
        assert_ticks(450.0, &[0.0, 100.0, 200.0, 300.0, 400.0, 500.0]);
        // 0.03 / 5 = 0.006 → step 0.01 (6 rounds up to 10 × 10^-3).
        assert_ticks(0.03, &[0.0, 0.01, 0.02, 0.03]);
        // Nothing to show counts as 1: 1 / 5 = 0.2 → step 0.2.
        assert_ticks(0.0, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_ticks(f64::NAN, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn tick_labels_show_the_decimals_of_the_step() {
        // Step 2: "2"; 0.2: "0.2"; 2.5: "2.5"; 0.25: "0.25"; 25: "25"; 0.01: "0.01".
        assert_eq!(tick_decimals(2.0), 0);
        assert_eq!(tick_decimals(0.2), 1);
        assert_eq!(tick_decimals(2.5), 1);
        assert_eq!(tick_decimals(0.25), 2);
        assert_eq!(tick_decimals(25.0), 0);
        assert_eq!(tick_decimals(0.01), 2);
    }

    #[test]
    fn svg_is_one_document_with_a_bar_per_value() {
        let svg = modes_by_radio().to_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("<title>Energy per day</title>"));
        // 2 groups × 3 series = 6 bars, 3 legend swatches.
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 6);
        assert_eq!(svg.matches("<rect class=\"swatch\"").count(), 3);
        // Values with two decimals above the bars: 9.7 → "9.70", 1.25 → "1.25".
        assert!(svg.contains(">9.70</text>"));
        assert!(svg.contains(">1.25</text>"));
        // Max 9.7 → ticks 0, 2, …, 10: six grid lines, labelled without decimals.
        assert_eq!(svg.matches("<line class=\"grid\"").count(), 6);
        assert!(svg.contains(">10</text>"));
        // Group labels and the unit.
        assert!(svg.contains(">balanced</text>"));
        assert!(svg.contains(">% of a 2,700 mAh battery per day</text>"));
        // One palette colour per series.
        for fill in ["#0072B2", "#E69F00", "#009E73"] {
            assert!(svg.contains(&format!("fill=\"{fill}\"")));
        }
    }

    #[test]
    fn bars_are_scaled_to_the_top_tick() {
        let chart = BarChart {
            title: "t".to_owned(),
            unit: "u".to_owned(),
            groups: vec!["g".to_owned()],
            series: vec![("s".to_owned(), vec![5.0])],
            reference_lines: Vec::new(),
        };
        let svg = chart.to_svg();
        // Max 5 → step 1, top 5: the bar fills the plot, 360 − 56 = 304 px
        // high from y = 56; one group 518 px wide, one bar 0.8 × 518 = 414.4 px
        // wide from 72 + 0.1 × 518 = 123.8.
        assert!(svg.contains(
            "<rect class=\"bar\" x=\"123.8\" y=\"56.0\" width=\"414.4\" height=\"304.0\""
        ));
    }

    #[test]
    fn text_is_escaped() {
        let chart = BarChart {
            title: "Sync & save <fast>".to_owned(),
            unit: "\"J\"".to_owned(),
            groups: vec!["a<b".to_owned()],
            series: vec![("x&y".to_owned(), vec![1.0])],
            reference_lines: vec![("limit > 0.5".to_owned(), 0.5)],
        };
        let svg = chart.to_svg();
        assert!(svg.contains("<title>Sync &amp; save &lt;fast&gt;</title>"));
        assert!(svg.contains(">&quot;J&quot;</text>"));
        assert!(svg.contains(">a&lt;b</text>"));
        assert!(svg.contains(">x&amp;y</text>"));
        assert!(svg.contains(">limit &gt; 0.5</text>"));
        assert!(!svg.contains("a<b"));
        assert!(!svg.contains("x&y"));
        assert_eq!(escape("&<>\"'"), "&amp;&lt;&gt;&quot;&#39;");
    }

    #[test]
    fn reference_line_is_dashed_and_labelled() {
        let svg = modes_by_radio().to_svg();
        assert_eq!(svg.matches("<line class=\"reference\"").count(), 1);
        assert!(svg.contains("stroke-dasharray=\"6 4\""));
        assert!(svg.contains(">target balanced ≤ 2 %</text>"));
        // 2 on an axis topping at 10: y = 360 − 2 / 10 × 304 = 299.2.
        assert!(svg.contains("y1=\"299.2\""));
    }

    #[test]
    fn reference_line_above_the_bars_raises_the_axis() {
        let chart = BarChart {
            title: "t".to_owned(),
            unit: "u".to_owned(),
            groups: vec!["g".to_owned()],
            series: vec![("s".to_owned(), vec![0.5])],
            reference_lines: vec![("limit".to_owned(), 3.0)],
        };
        let svg = chart.to_svg();
        // Max 3 → 3 / 5 = 0.6 → step 1 (0.6 × 10 ≤ 10): ticks 0, 1, 2, 3;
        // the line is at the top: y = 56.
        assert_eq!(svg.matches("<line class=\"grid\"").count(), 4);
        assert!(svg.contains("<line class=\"reference\" x1=\"72\" y1=\"56.0\""));
    }

    #[test]
    fn empty_and_all_zero_charts_render() {
        let empty = BarChart::default().to_svg();
        assert!(empty.starts_with("<svg"));
        assert!(empty.ends_with("</svg>\n"));
        assert_eq!(empty.matches("<rect class=\"bar\"").count(), 0);
        // An axis from 0 to 1 at 0.2: six grid lines.
        assert_eq!(empty.matches("<line class=\"grid\"").count(), 6);
        assert!(empty.contains(">1.0</text>"));

        let zeros = BarChart {
            groups: vec!["a".to_owned(), "b".to_owned()],
            series: vec![("s".to_owned(), vec![0.0, 0.0])],
            ..BarChart::default()
        };
        let svg = zeros.to_svg();
        // 2 bars of height 0, labelled 0.00; the axis still goes to 1.
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        assert_eq!(svg.matches("height=\"0.0\"").count(), 2);
        assert_eq!(svg.matches(">0.00</text>").count(), 2);
        assert!(svg.contains(">1.0</text>"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn non_finite_and_missing_values_are_drawn_as_zero_and_labelled_na() {
        let chart = BarChart {
            groups: vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            // One NaN, one infinity, one missing value.
            series: vec![("s".to_owned(), vec![f64::NAN, f64::INFINITY])],
            reference_lines: vec![("never".to_owned(), f64::NAN)],
            ..BarChart::default()
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert_eq!(svg.matches(">n/a</text>").count(), 3);
        assert_eq!(svg.matches("height=\"0.0\"").count(), 3);
        // The NaN reference line is skipped.
        assert_eq!(svg.matches("<line class=\"reference\"").count(), 0);
        assert!(!svg.contains("NaN"));
        assert!(!svg.contains("inf"));
    }
}
