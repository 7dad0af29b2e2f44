//! `pretext plot`: the loss (train and eval) and throughput of a run as PNG and SVG charts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::train::metrics::{read, Record};

/// TrueType fonts tried for labels, after `$PRETEXT_FONT`.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a label font once; `None` when no TrueType font was found.
fn font() -> Option<&'static str> {
    static FONT: OnceLock<Option<String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = std::env::var("PRETEXT_FONT").ok().into_iter().chain(FONTS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Some(path);
                }
            }
        }
        None
    })
    .as_deref()
}

/// What `plot` wrote.
pub struct PlotReport {
    pub png: PathBuf,
    pub svg: PathBuf,
    pub points: usize,
    /// The label font, or `None` when the charts were drawn without text.
    pub font: Option<String>,
}

/// Writes `<run_dir>/metrics.png` and `<run_dir>/metrics.svg` from `metrics.jsonl`.
pub fn plot(run_dir: &Path) -> Result<PlotReport> {
    let records = read(run_dir)?;
    if records.is_empty() {
        return Err(Error::data_hint(
            format!("`{}` has no metrics to plot", run_dir.join("metrics.jsonl").display()),
            "pass the run directory of `pretext train` (default `runs/<name>`) after it logged a step",
        ));
    }
    let font = font();
    let png = run_dir.join("metrics.png");
    let svg = run_dir.join("metrics.svg");
    let fail = |p: &Path, e: String| Error::env(format!("cannot draw `{}`: {e}", p.display()));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, &records, font.is_some()).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, &records, font.is_some()).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    PlotReport { png, svg, points: records.len(), font: font.map(str::to_string) }.checked()
}

impl PlotReport {
    fn checked(self) -> Result<Self> {
        for p in [&self.png, &self.svg] {
            if !p.is_file() {
                return Err(Error::internal(format!("`{}` was not written", p.display())));
            }
        }
        Ok(self)
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// The chart's size in pixels, and the heights of its loss and throughput panels (the data-wait
/// panel takes the rest).
const SIZE: (u32, u32) = (1000, 820);
const LOSS_HEIGHT: u32 = 420;
const THROUGHPUT_HEIGHT: u32 = 210;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    records: &[Record],
    text: bool,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (top, rest) = root.split_vertically(LOSS_HEIGHT);
    let (middle, bottom) = rest.split_vertically(THROUGHPUT_HEIGHT);
    // Steps are integers: an integer axis gives integer ticks ("50", not "50.0").
    let first = records[0].step;
    let steps = first..records.last().map(|r| r.step).unwrap_or(first).max(first + 1);
    let evals: Vec<(u64, f64)> = records.iter().filter_map(|r| r.eval_loss.map(|l| (r.step, l))).collect();
    let loss = range(records.iter().map(|r| r.loss).chain(evals.iter().map(|p| p.1)));
    let mut b = ChartBuilder::on(&top);
    b.margin(15);
    if text {
        b.caption("loss", ("sans-serif", 22)).x_label_area_size(35).y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(steps.clone(), loss.0..loss.1).map_err(e)?;
    if text {
        chart.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(e)?;
    }
    let train = chart
        .draw_series(LineSeries::new(records.iter().map(|r| (r.step, r.loss)), BLUE.stroke_width(2)))
        .map_err(e)?;
    if text {
        train.label("train").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    }
    if !evals.is_empty() {
        let s = chart.draw_series(LineSeries::new(evals.iter().copied(), RED.stroke_width(2))).map_err(e)?;
        if text {
            s.label("eval").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        }
        chart.draw_series(evals.iter().map(|&p| Circle::new(p, 3, RED.filled()))).map_err(e)?;
    }
    if text {
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(e)?;
    }

    let tps = range(records.iter().map(|r| r.tokens_per_s).chain([0.0]));
    let mut b = ChartBuilder::on(&middle);
    b.margin(15);
    if text {
        b.caption("throughput", ("sans-serif", 18)).x_label_area_size(30).y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(steps.clone(), 0.0..tps.1).map_err(e)?;
    if text {
        chart
            .configure_mesh()
            .y_desc("tokens/s")
            .y_labels(5)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
    }
    let line = chart
        .draw_series(LineSeries::new(records.iter().map(|r| (r.step, r.tokens_per_s)), GREEN.stroke_width(2)))
        .map_err(e)?;
    if text {
        let label = format!("tokens/s (median {:.0})", median(records.iter().map(|r| r.tokens_per_s)));
        line.label(label).legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }

    // The data-wait share on its own axis, in percent. The axis starts a little below 0 so that
    // the common case, no wait at all, is a line visibly on 0 % rather than hidden in the frame.
    let shares: Vec<(u64, f64)> =
        records.iter().map(|r| (r.step, 100.0 * r.data_wait_s / (r.data_wait_s + r.compute_s).max(1e-9))).collect();
    let most = shares.iter().map(|p| p.1).fold(0.0, f64::max);
    let ceiling = if most < 5.0 { 5.0 } else { (most * 1.15).min(100.0) };
    let mut b = ChartBuilder::on(&bottom);
    b.margin(15);
    if text {
        b.caption("waiting for data", ("sans-serif", 18)).x_label_area_size(35).y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(steps, -ceiling * 0.08..ceiling).map_err(e)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("% of step time")
            .y_labels(4)
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .draw()
            .map_err(e)?;
    }
    let line = chart.draw_series(LineSeries::new(shares.iter().copied(), MAGENTA.stroke_width(2))).map_err(e)?;
    if text {
        let total_wait: f64 = records.iter().map(|r| r.data_wait_s).sum();
        let total: f64 = records.iter().map(|r| r.data_wait_s + r.compute_s).sum();
        let label =
            format!("data wait: {:.1}% of the run, at most {most:.1}% of a step", 100.0 * total_wait / total.max(1e-9));
        line.label(label).legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], MAGENTA));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
