//! The failover timeline as an SVG: request rate, errors and acknowledged messages over
//! time, with the kill, ejection, restart and return marked.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::load::Sample;

/// Width of one bar of the rate series, in milliseconds.
const BUCKET_MS: u32 = 500;

/// Points (seconds, per second) of one line.
type Series = Vec<(f64, f64)>;

/// A vertical line on the timeline.
pub struct Marker {
    pub at_s: f64,
    pub label: String,
}

fn series(samples: &[(u32, Sample)], kind: Sample, buckets: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0u32; buckets];
    for &(ms, s) in samples {
        if s == kind {
            let b = (ms / BUCKET_MS) as usize;
            if b < buckets {
                counts[b] += 1;
            }
        }
    }
    let per_s = 1000.0 / BUCKET_MS as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            (
                (i as f64 + 0.5) * BUCKET_MS as f64 / 1000.0,
                c as f64 * per_s,
            )
        })
        .collect()
}

pub fn draw(
    path: &Path,
    title: &str,
    samples: &[(u32, Sample)],
    markers: &[Marker],
) -> anyhow::Result<()> {
    let end_ms = samples.iter().map(|&(ms, _)| ms).max().unwrap_or(1000) + BUCKET_MS;
    let buckets = (end_ms / BUCKET_MS) as usize + 1;
    let end_s = end_ms as f64 / 1000.0;
    let requests = series(samples, Sample::RequestOk, buckets);
    let failed = series(samples, Sample::RequestFailed, buckets);
    let acked = series(samples, Sample::MessageAcked, buckets);
    let reconnects = series(samples, Sample::Reconnected, buckets);
    let connect_failed = series(samples, Sample::ConnectFailed, buckets);
    let top = requests
        .iter()
        .chain(&acked)
        .map(|&(_, v)| v)
        .fold(10.0, f64::max)
        * 1.35;

    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).context("drawing the plot")?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, 0.0..top)
        .context("drawing the plot")?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("per second")
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()
        .context("drawing the plot")?;

    let lines: [(&str, &Series, RGBColor); 5] = [
        ("HTTP GET ok/s", &requests, RGBColor(31, 119, 180)),
        ("messages acked/s", &acked, RGBColor(44, 160, 44)),
        ("HTTP GET errors/s", &failed, RGBColor(214, 39, 40)),
        (
            "WebSocket reconnects/s",
            &reconnects,
            RGBColor(255, 127, 14),
        ),
        (
            "WebSocket connect failures/s",
            &connect_failed,
            RGBColor(148, 103, 189),
        ),
    ];
    for (label, data, color) in lines {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .context("drawing the plot")?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    for (i, m) in markers.iter().enumerate() {
        let color = RGBColor(90, 90, 90);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(m.at_s, 0.0), (m.at_s, top)],
                color.stroke_width(1),
            )))
            .context("drawing the plot")?;
        // Stagger the labels so neighbouring markers stay readable.
        let y = top * (0.97 - 0.06 * (i % 4) as f64);
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {}", m.label),
                (m.at_s, y),
                ("sans-serif", 13).into_font().color(&color),
            )))
            .context("drawing the plot")?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .context("drawing the plot")?;
    root.present().context("writing the plot")?;
    Ok(())
}
