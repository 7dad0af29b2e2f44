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
        let root = BitMapBackend::new(&png, (1000, 700)).into_drawing_area();
        draw(&root, &records, font.is_some()).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    {
        let root = SVGBackend::new(&svg, (1000, 700)).into_drawing_area();
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

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    records: &[Record],
    text: bool,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(460);
    let steps = (
        records[0].step as f64,
        records.last().map(|r| r.step as f64).unwrap_or(1.0).max(records[0].step as f64 + 1.0),
    );
    let evals: Vec<(f64, f64)> = records.iter().filter_map(|r| r.eval_loss.map(|l| (r.step as f64, l))).collect();
    let loss = range(records.iter().map(|r| r.loss).chain(evals.iter().map(|p| p.1)));
    let mut b = ChartBuilder::on(&top);
    b.margin(15);
    if text {
        b.caption("loss", ("sans-serif", 22)).x_label_area_size(35).y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(steps.0..steps.1, loss.0..loss.1).map_err(e)?;
    if text {
        chart.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(e)?;
    }
    let train = chart
        .draw_series(LineSeries::new(records.iter().map(|r| (r.step as f64, r.loss)), BLUE.stroke_width(2)))
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
    let mut b = ChartBuilder::on(&bottom);
    b.margin(15);
    if text {
        b.caption("throughput (tokens/s) and data wait share", ("sans-serif", 18))
            .x_label_area_size(35)
            .y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(steps.0..steps.1, 0.0..tps.1).map_err(e)?;
    if text {
        chart.configure_mesh().x_desc("step").y_desc("tokens/s").draw().map_err(e)?;
    }
    chart
        .draw_series(LineSeries::new(records.iter().map(|r| (r.step as f64, r.tokens_per_s)), GREEN.stroke_width(2)))
        .map_err(e)?;
    // The data-wait share, scaled onto the same axis (100% = the top).
    chart
        .draw_series(LineSeries::new(
            records.iter().map(|r| {
                let share = r.data_wait_s / (r.data_wait_s + r.compute_s).max(1e-9);
                (r.step as f64, share * tps.1)
            }),
            MAGENTA.stroke_width(1),
        ))
        .map_err(e)?;
    Ok(())
}
