//! The failover timeline as an SVG: request rate, errors and acknowledged messages over
//! time, with the kill, ejection, restart and return marked.
//!
//! Made to be read at a glance: every point is a count over one whole second (the
//! clients send on a fixed period, and half-second buckets drew that period as a
//! zigzag); the plot ends with the last whole second of load, so the stop of the load
//! does not look like an outage; marker labels sit in rows above the plot, never on each
//! other or on the data; the legend is beside the plot.

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::load::Sample;

/// Each point counts the samples in the second before it.
const WINDOW_MS: u32 = 1000;
/// One point every this many milliseconds.
const STEP_MS: u32 = 250;

/// Points (seconds, per second) of one line.
type Series = Vec<(f64, f64)>;

/// A vertical line on the timeline.
pub struct Marker {
    pub at_s: f64,
    pub label: String,
    /// What rlb did (ejected, back), as opposed to what the experiment did (kill, restart).
    pub by_rlb: bool,
}

/// The end of the plot, in ms: the last whole step before the load stopped. Later windows
/// would be only partly filled (acks still trickling in, no GETs) and draw every line
/// falling to 0: the end of the run, not an outage.
pub fn plot_end_ms(load_ms: u32) -> u32 {
    load_ms - load_ms % STEP_MS
}

/// The rate of `kind` per second, over a sliding one-second window, every [`STEP_MS`],
/// for windows that end by `end_ms` (see [`plot_end_ms`]). The first point is at 1 s:
/// before it a window would be partial.
pub fn rate_series(samples: &[(u32, Sample)], kind: Sample, end_ms: u32) -> Series {
    let steps = (end_ms / STEP_MS) as usize;
    let mut counts = vec![0u32; steps];
    for &(ms, s) in samples {
        let step = (ms / STEP_MS) as usize;
        if s == kind && step < steps {
            counts[step] += 1;
        }
    }
    let per_window = (WINDOW_MS / STEP_MS) as usize;
    let scale = 1000.0 / WINDOW_MS as f64;
    (per_window..=steps)
        .map(|end| {
            let n: u32 = counts[end - per_window..end].iter().sum();
            ((end as u32 * STEP_MS) as f64 / 1000.0, f64::from(n) * scale)
        })
        .collect()
}

/// A label's place above the plot: its left edge at its marker's x, on `row` (0 is the
/// lowest, nearest the plot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelPlace {
    pub row: usize,
}

/// Horizontal room kept between two labels on one row, in pixels.
const LABEL_GAP_PX: f64 = 10.0;

/// Rows for labels that start at `x` (pixels, left edge) and are `width` wide, in marker
/// order: each goes on the lowest row where it overlaps no label already placed there, so
/// two markers a few milliseconds apart (a kill and its ejection) stack instead of
/// printing over each other.
pub fn place_labels(labels: &[(f64, f64)]) -> Vec<LabelPlace> {
    // Right edge (plus gap) of the rightmost label of each row so far.
    let mut row_ends: Vec<f64> = Vec::new();
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| labels[a].0.total_cmp(&labels[b].0));
    let mut places = vec![LabelPlace { row: 0 }; labels.len()];
    for i in order {
        let (x, width) = labels[i];
        let row = match row_ends.iter().position(|&end| end <= x) {
            Some(row) => row,
            None => {
                row_ends.push(f64::NEG_INFINITY);
                row_ends.len() - 1
            }
        };
        row_ends[row] = x + width + LABEL_GAP_PX;
        places[i] = LabelPlace { row };
    }
    places
}

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 560;
/// The legend's column, right of the plot.
const LEGEND_W: u32 = 230;
const MARGIN: u32 = 12;
const Y_LABEL_AREA: u32 = 60;
const LABEL_ROW_PX: i32 = 17;
const EXPERIMENT_COLOR: RGBColor = RGBColor(70, 70, 70);
const RLB_COLOR: RGBColor = RGBColor(23, 130, 140);

/// Draws the timeline of a run whose load lasted `load_s` seconds.
pub fn draw(
    path: &Path,
    title: &str,
    samples: &[(u32, Sample)],
    markers: &[Marker],
    load_s: f64,
) -> anyhow::Result<()> {
    let end_ms = plot_end_ms((load_s * 1000.0) as u32).max(WINDOW_MS);
    let end_s = f64::from(end_ms) / 1000.0;
    let requests = rate_series(samples, Sample::RequestOk, end_ms);
    let failed = rate_series(samples, Sample::RequestFailed, end_ms);
    let acked = rate_series(samples, Sample::MessageAcked, end_ms);
    let reconnects = rate_series(samples, Sample::Reconnected, end_ms);
    let connect_failed = rate_series(samples, Sample::ConnectFailed, end_ms);
    let top = requests
        .iter()
        .chain(&acked)
        .chain(&failed)
        .map(|&(_, v)| v)
        .fold(10.0, f64::max)
        * 1.12;

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).context("drawing the plot")?;
    // The title first, then the label band below it, then the plot.
    let body = root
        .titled(title, ("sans-serif", 20))
        .context("drawing the plot")?;
    let (left, _) = body.split_horizontally(WIDTH - LEGEND_W);

    // Label rows: placed with the plot's x scale, known before the chart is built (only
    // the band's height depends on them).
    let label_font = ("sans-serif", 13).into_font();
    let plot_x0 = f64::from(MARGIN + Y_LABEL_AREA);
    let px_per_s = f64::from(WIDTH - LEGEND_W - 2 * MARGIN - Y_LABEL_AREA) / end_s;
    let mut spans = Vec::with_capacity(markers.len());
    for m in markers {
        let (w, _) = root
            .estimate_text_size(&m.label, &label_font.clone().into())
            .context("measuring a label")?;
        spans.push((plot_x0 + m.at_s * px_per_s, f64::from(w)));
    }
    let places = place_labels(&spans);
    let rows = places.iter().map(|p| p.row + 1).max().unwrap_or(0) as i32;
    let band = rows * LABEL_ROW_PX + 8;

    let mut chart = ChartBuilder::on(&left)
        .margin(MARGIN)
        .margin_top(MARGIN as i32 + band)
        .margin_right(MARGIN)
        .x_label_area_size(40)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..end_s, 0.0..top)
        .context("drawing the plot")?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (each point: the second before it)")
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

    // Marker lines under the data; above the plot each label is joined to its line. The
    // labels go on last, each on a white box: a line from a higher row passes behind a
    // lower label instead of through its text.
    let (_, plot_y) = chart.plotting_area().get_pixel_range();
    let color_of = |m: &Marker| {
        if m.by_rlb {
            RLB_COLOR
        } else {
            EXPERIMENT_COLOR
        }
    };
    let text_y = |place: &LabelPlace| plot_y.start - 4 - (place.row as i32 + 1) * LABEL_ROW_PX;
    for (m, place) in markers.iter().zip(&places) {
        let color = color_of(m);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(m.at_s, 0.0), (m.at_s, top)],
                color.stroke_width(1),
            )))
            .context("drawing the plot")?;
        let (x, _) = chart.backend_coord(&(m.at_s, 0.0));
        root.draw(&PathElement::new(
            vec![(x, text_y(place) + LABEL_ROW_PX - 3), (x, plot_y.start)],
            color.stroke_width(1),
        ))
        .context("drawing the plot")?;
    }
    for ((m, place), &(_, width)) in markers.iter().zip(&places).zip(&spans) {
        let (x, _) = chart.backend_coord(&(m.at_s, 0.0));
        let y = text_y(place);
        root.draw(&Rectangle::new(
            [(x + 2, y - 1), (x + 8 + width as i32, y + LABEL_ROW_PX - 4)],
            WHITE.filled(),
        ))
        .context("drawing the plot")?;
        root.draw(&Text::new(
            format!(" {}", m.label),
            (x, y),
            label_font.clone().color(&color_of(m)),
        ))
        .context("drawing the plot")?;
    }
    for (_, data, color) in &lines {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .context("drawing the plot")?;
    }

    draw_legend(&root, &lines, (WIDTH - LEGEND_W) as i32 + 4, plot_y.start)?;
    root.present().context("writing the plot")?;
    Ok(())
}

/// The legend in its own column right of the plot, level with its top: it covers no
/// data. `x`, `top`: pixels on `root`.
fn draw_legend(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    lines: &[(&str, &Series, RGBColor)],
    x: i32,
    top: i32,
) -> anyhow::Result<()> {
    let font = ("sans-serif", 13).into_font();
    let mut entries: Vec<(String, ShapeStyle)> = lines
        .iter()
        .map(|&(label, _, color)| (label.to_string(), color.stroke_width(2)))
        .collect();
    entries.push((
        "kill, restart (experiment)".into(),
        EXPERIMENT_COLOR.stroke_width(1),
    ));
    entries.push((
        "ejected, back (rlb /events)".into(),
        RLB_COLOR.stroke_width(1),
    ));
    for (i, (label, style)) in entries.into_iter().enumerate() {
        let y = top + 8 + i as i32 * 22;
        root.draw(&PathElement::new(vec![(x, y + 7), (x + 22, y + 7)], style))
            .context("drawing the legend")?;
        root.draw(&Text::new(label, (x + 28, y), font.clone()))
            .context("drawing the legend")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(kind: Sample, from_ms: u32, to_ms: u32, step_ms: u32) -> Vec<(u32, Sample)> {
        (from_ms..to_ms)
            .step_by(step_ms as usize)
            .map(|ms| (ms, kind))
            .collect()
    }

    #[test]
    fn the_plot_ends_with_the_last_whole_step_of_load() {
        assert_eq!(plot_end_ms(20_000), 20_000);
        // A load of 19.9 s: the partial step 19.75-19.9 is not drawn.
        assert_eq!(plot_end_ms(19_900), 19_750);
        assert_eq!(plot_end_ms(0), 0);
    }

    #[test]
    fn samples_after_the_load_do_not_pull_the_last_point_down() {
        // 100 GET/s for 20 s, then only a few acks trickling in until 21.3 s: the old plot
        // drew every line falling to 0 there.
        let mut samples = every(Sample::RequestOk, 0, 20_000, 10);
        samples.push((20_100, Sample::MessageAcked));
        samples.push((21_300, Sample::MessageAcked));
        let series = rate_series(&samples, Sample::RequestOk, plot_end_ms(20_000));
        assert_eq!(series.last(), Some(&(20.0, 100.0)));
        assert!(series.iter().all(|&(t, _)| t <= 20.0));
        let acks = rate_series(&samples, Sample::MessageAcked, plot_end_ms(20_000));
        assert!(acks.iter().all(|&(_, v)| v == 0.0));
    }

    #[test]
    fn a_steady_rate_stays_flat_to_the_last_point() {
        // 200 GET/s for 20 s, the run's load stopped at 20 s, the last sample at 19.995.
        let samples = every(Sample::RequestOk, 0, 20_000, 5);
        let end = plot_end_ms(20_000);
        let series = rate_series(&samples, Sample::RequestOk, end);
        assert_eq!(series.first(), Some(&(1.0, 200.0)));
        assert_eq!(series.last(), Some(&(20.0, 200.0)));
        assert!(series.iter().all(|&(_, v)| v == 200.0), "{series:?}");
        // Clients on a 200 ms period: whole-second windows do not zigzag.
        let acks = every(Sample::MessageAcked, 0, 20_000, 200);
        let series = rate_series(&acks, Sample::MessageAcked, end);
        assert!(series.iter().all(|&(_, v)| v == 5.0), "{series:?}");
    }

    #[test]
    fn an_outage_shows_as_a_dip() {
        let mut samples = every(Sample::RequestOk, 0, 5_000, 10);
        samples.extend(every(Sample::RequestOk, 6_000, 10_000, 10));
        let series = rate_series(&samples, Sample::RequestOk, 10_000);
        let at = |t: f64| series.iter().find(|&&(s, _)| s == t).expect("point").1;
        assert_eq!(at(5.0), 100.0);
        assert_eq!(at(5.5), 50.0);
        assert_eq!(at(6.0), 0.0);
        assert_eq!(at(7.0), 100.0);
    }

    fn overlap(a: (f64, f64), b: (f64, f64)) -> bool {
        a.0 < b.0 + b.1 + LABEL_GAP_PX && b.0 < a.0 + a.1 + LABEL_GAP_PX
    }

    #[test]
    fn labels_on_one_row_never_overlap() {
        // The full run's markers: kill s1 at 5.0 s and its ejection 6 ms later, kill
        // replica 1 at 7.0 s ejected at 7.9 s, restarts at 11 and 13 s, back 0.9 s later;
        // at 40 px per second, labels 60-160 px wide.
        let labels = [
            (200.0, 60.0),
            (200.24, 150.0),
            (280.0, 100.0),
            (316.0, 160.0),
            (440.0, 80.0),
            (476.0, 140.0),
            (520.0, 130.0),
            (556.0, 160.0),
        ];
        let places = place_labels(&labels);
        for i in 0..labels.len() {
            for j in i + 1..labels.len() {
                if places[i].row == places[j].row {
                    assert!(
                        !overlap(labels[i], labels[j]),
                        "labels {i} and {j} overlap on row {}: {places:?}",
                        places[i].row
                    );
                }
            }
        }
        // The kill and its ejection 6 ms later stack.
        assert_ne!(places[0].row, places[1].row);
        // Labels far apart share the lowest row.
        assert_eq!(
            place_labels(&[(0.0, 50.0), (100.0, 50.0)]),
            vec![LabelPlace { row: 0 }; 2]
        );
    }

    #[test]
    fn labels_are_placed_in_order_of_x_whatever_the_input_order() {
        let places = place_labels(&[(300.0, 50.0), (0.0, 400.0), (100.0, 50.0)]);
        assert_eq!(places[1].row, 0);
        assert_ne!(places[0].row, places[1].row);
        assert_ne!(places[2].row, places[1].row);
    }

    #[test]
    fn draws_an_svg() {
        let path = std::env::temp_dir().join(format!("rlb-plot-test-{}.svg", std::process::id()));
        let samples = every(Sample::RequestOk, 0, 8_000, 10);
        let markers = [
            Marker {
                at_s: 2.0,
                label: "kill s1".into(),
                by_rlb: false,
            },
            Marker {
                at_s: 2.006,
                label: "s1 ejected after 6 ms".into(),
                by_rlb: true,
            },
        ];
        draw(&path, "test", &samples, &markers, 8.0).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("read svg");
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("s1 ejected after 6 ms") && svg.contains("HTTP GET ok/s"));
    }
}
