//! Progress on stderr: an indicatif bar when stderr is a terminal, nothing otherwise.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ground::human;

/// Counts rows and tokens and shows their rates.
pub struct Meter {
    bar: ProgressBar,
    started: Instant,
    rows: std::sync::atomic::AtomicU64,
    tokens: std::sync::atomic::AtomicU64,
}

impl Meter {
    pub fn new(visible: bool, what: &str) -> Self {
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Meter { bar, started: Instant::now(), rows: 0.into(), tokens: 0.into() }
    }

    pub fn add(&self, rows: u64, tokens: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let r = self.rows.fetch_add(rows, Relaxed) + rows;
        let t = self.tokens.fetch_add(tokens, Relaxed) + tokens;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{} rows ({}/s), {} tokens ({}/s)",
            human(r as f64),
            human(r as f64 / secs),
            human(t as f64),
            human(t as f64 / secs)
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub fn abandon(&self) {
        self.bar.abandon();
    }
}
