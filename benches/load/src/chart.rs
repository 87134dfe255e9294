//! The SVG chart: maximum throughput and p99 latency at each fixed rate,
//! per proxy configuration, as horizontal bars with min–max whiskers.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::stats::{fmt_ms, fmt_rate, Summary};

/// One bar group: a proxy configuration and its figures.
pub struct Row {
    /// Label on the axis.
    pub label: String,
    /// Whether it is a Sluice row (drawn in another colour).
    pub sluice: bool,
    /// Maximum throughput, req/s.
    pub throughput: Option<Summary>,
    /// p99 in ms at each rate of `ChartData::rates`, in order.
    pub p99: Vec<Option<Summary>>,
}

/// What the chart shows.
pub struct ChartData {
    /// The rows, top to bottom.
    pub rows: Vec<Row>,
    /// The fixed rates of the latency runs.
    pub rates: Vec<u32>,
    /// A subtitle (the machine, the run count).
    pub subtitle: String,
    /// A footer line (what was skipped), or empty.
    pub footer: String,
}

const WIDTH: u32 = 1000;
const ROW_HEIGHT: u32 = 34;
const SLUICE: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const PEER: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const RATE_SHADES: [RGBColor; 3] = [
    RGBColor(0x9e, 0xc9, 0xe2),
    RGBColor(0x3c, 0x8d, 0xbc),
    RGBColor(0x0b, 0x4f, 0x7c),
];

/// Draws the chart into an SVG file at `path`.
pub fn draw(data: &ChartData, path: &Path) -> Result<()> {
    let n = data.rows.len().max(1) as u32;
    let panel = 90 + n * ROW_HEIGHT;
    let height = 60 + 2 * panel + 24;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (root, footer) = root.split_vertically(height - 24);
    footer
        .draw(&Text::new(
            data.footer.as_str(),
            (10, 4),
            ("sans-serif", 12),
        ))
        .map_err(err)?;
    let (title, body) = root.split_vertically(60);
    title
        .draw(&Text::new(
            "Sluice vs nginx, HAProxy, Caddy and bare Pingora: one core each, loopback",
            (10, 8),
            ("sans-serif", 22).into_font().style(FontStyle::Bold),
        ))
        .map_err(err)?;
    title
        .draw(&Text::new(
            data.subtitle.as_str(),
            (10, 36),
            ("sans-serif", 14),
        ))
        .map_err(err)?;
    let (top, bottom) = body.split_vertically(panel);
    throughput_panel(data, &top)?;
    latency_panel(data, &bottom)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

fn throughput_panel(data: &ChartData, area: &DrawingArea<SVGBackend, Shift>) -> Result<()> {
    let n = data.rows.len();
    let max = data
        .rows
        .iter()
        .filter_map(|r| r.throughput.map(|s| s.max))
        .fold(1.0, f64::max);
    let labels: Vec<String> = data.rows.iter().map(|r| r.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Maximum throughput, req/s (wrk, 64 connections; median, whiskers min–max)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(200)
        .build_cartesian_2d(0.0..max * 1.18, 0.0..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| category_label(&labels, *y))
        .y_label_style(("sans-serif", 13))
        .x_label_formatter(&|x| fmt_rate(*x))
        .draw()
        .map_err(err)?;
    for (i, row) in data.rows.iter().enumerate() {
        let y0 = (n - 1 - i) as f64;
        let colour = if row.sluice { SLUICE } else { PEER };
        match row.throughput {
            Some(s) => {
                chart
                    .draw_series([Rectangle::new(
                        [(0.0, y0 + 0.18), (s.median, y0 + 0.82)],
                        colour.filled(),
                    )])
                    .map_err(err)?;
                whisker(&mut chart, s, y0 + 0.5, 0.2)?;
                chart
                    .draw_series([Text::new(
                        fmt_rate(s.median),
                        (s.max + max * 0.01, y0 + 0.62),
                        ("sans-serif", 13),
                    )])
                    .map_err(err)?;
            }
            None => {
                chart
                    .draw_series([Text::new(
                        "not measured",
                        (max * 0.01, y0 + 0.62),
                        ("sans-serif", 13),
                    )])
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

fn latency_panel(data: &ChartData, area: &DrawingArea<SVGBackend, Shift>) -> Result<()> {
    let n = data.rows.len();
    let values = || data.rows.iter().flat_map(|r| r.p99.iter().flatten());
    let max = values().map(|s| s.max).fold(1.0, f64::max);
    let min = values().map(|s| s.min).fold(max, f64::min).max(0.001);
    let lo = 10f64.powf((min / 2.0).log10().floor());
    let hi = 10f64.powf((max * 3.0).log10().ceil());
    let labels: Vec<String> = data.rows.iter().map(|r| r.label.clone()).collect();
    let rates: Vec<String> = data
        .rates
        .iter()
        .map(|r| format!("{} req/s", fmt_rate(*r as f64)))
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "p99 latency, ms, log scale (at {}, coordinated omission corrected)",
                rates.join(" and ")
            ),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(200)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| category_label(&labels, *y))
        .y_label_style(("sans-serif", 13))
        .x_label_formatter(&|x| axis_ms(*x))
        .draw()
        .map_err(err)?;
    let k = data.rates.len().max(1);
    let band = 0.7 / k as f64;
    for (i, row) in data.rows.iter().enumerate() {
        let y0 = (n - 1 - i) as f64;
        for (j, s) in row.p99.iter().enumerate() {
            let colour = RATE_SHADES[j.min(RATE_SHADES.len() - 1)];
            let top = y0 + 0.85 - j as f64 * band;
            let bottom = top - band * 0.9;
            match s {
                Some(s) => {
                    chart
                        .draw_series([Rectangle::new(
                            [(lo, bottom), (s.median.max(lo), top)],
                            colour.filled(),
                        )])
                        .map_err(err)?;
                    whisker(&mut chart, *s, (top + bottom) / 2.0, band * 0.3)?;
                    chart
                        .draw_series([Text::new(
                            format!("{} ms", fmt_ms(s.median)),
                            (s.max.max(lo) * 1.1, top),
                            ("sans-serif", 11),
                        )])
                        .map_err(err)?;
                }
                None => {
                    chart
                        .draw_series([Text::new(
                            "not measured",
                            (lo * 1.1, top),
                            ("sans-serif", 11),
                        )])
                        .map_err(err)?;
                }
            }
        }
    }
    // Legend for the rate shades.
    for (j, rate) in rates.iter().enumerate() {
        let colour = RATE_SHADES[j.min(RATE_SHADES.len() - 1)];
        let x = WIDTH as i32 - 170;
        let y = 40 + j as i32 * 18;
        area.draw(&Rectangle::new([(x, y), (x + 14, y + 12)], colour.filled()))
            .map_err(err)?;
        area.draw(&Text::new(rate.as_str(), (x + 20, y), ("sans-serif", 12)))
            .map_err(err)?;
    }
    Ok(())
}

fn whisker<X, DB>(
    chart: &mut ChartContext<DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    s: Summary,
    y: f64,
    half: f64,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    DB: DrawingBackend,
{
    if s.count < 2 {
        return Ok(());
    }
    let style = BLACK.stroke_width(1);
    chart
        .draw_series([
            PathElement::new(vec![(s.min, y), (s.max, y)], style),
            PathElement::new(vec![(s.min, y - half), (s.min, y + half)], style),
            PathElement::new(vec![(s.max, y - half), (s.max, y + half)], style),
        ])
        .map_err(|e| anyhow!("drawing the chart: {e:?}"))?;
    Ok(())
}

/// Log-axis tick labels: `0.1`, `1`, `10`, `1,000`.
fn axis_ms(v: f64) -> String {
    if v >= 1.0 {
        fmt_rate(v)
    } else {
        format!("{v}")
    }
}

/// The label for a y tick: rows are drawn from the top, each spanning one
/// unit; only the tick at a row's middle gets its label.
fn category_label(labels: &[String], y: f64) -> String {
    let n = labels.len();
    let frac = y - y.floor();
    if (frac - 0.5).abs() > 0.01 || y < 0.0 {
        return String::new();
    }
    let from_bottom = y.floor() as usize;
    if from_bottom >= n {
        return String::new();
    }
    labels[n - 1 - from_bottom].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sit_at_row_middles_top_down() {
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(category_label(&labels, 2.5), "a");
        assert_eq!(category_label(&labels, 0.5), "c");
        assert_eq!(category_label(&labels, 1.0), "");
        assert_eq!(category_label(&labels, 3.5), "");
    }

    #[test]
    fn log_axis_labels() {
        assert_eq!(axis_ms(0.1), "0.1");
        assert_eq!(axis_ms(1.0), "1");
        assert_eq!(axis_ms(1000.0), "1,000");
    }

    #[test]
    fn draws_an_svg() {
        let dir = std::env::temp_dir().join(format!("loadbench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let s = |a: f64, b: f64, c: f64| Summary::of(&[a, b, c]);
        let data = ChartData {
            rows: vec![
                Row {
                    label: "nginx".into(),
                    sluice: false,
                    throughput: s(50000.0, 51000.0, 52000.0),
                    p99: vec![s(0.3, 0.4, 0.5), s(1.0, 2.0, 3.0)],
                },
                Row {
                    label: "Sluice (plain proxy)".into(),
                    sluice: true,
                    throughput: s(30000.0, 31000.0, 32000.0),
                    p99: vec![s(0.5, 0.6, 0.7), None],
                },
                Row {
                    label: "Sluice (TLS)".into(),
                    sluice: true,
                    throughput: None,
                    p99: vec![None, None],
                },
            ],
            rates: vec![2000, 10000],
            subtitle: "test".into(),
            footer: "Not measured: Sluice TLS".into(),
        };
        draw(&data, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Sluice (plain proxy)"));
        assert!(svg.contains("51,000"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
