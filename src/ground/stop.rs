//! Graceful stops. The first SIGINT (Ctrl-C) or SIGTERM asks the running command to stop at its
//! next safe point: `train` after the current step, with a checkpoint; `export` at once, keeping
//! its finished parts for `--resume`. The command then exits with 128 + the signal's number (130
//! or 143), as shells expect. A second signal exits at once.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Starts listening for SIGINT and SIGTERM on `rt`.
pub fn listen(rt: &tokio::runtime::Runtime) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _entered = rt.enter();
    let cannot = |e: std::io::Error| Error::env(format!("cannot listen for signals: {e}"));
    let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
    let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
    rt.spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = int.recv() => SIGINT,
                Some(()) = term.recv() => SIGTERM,
                else => return,
            };
            if SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
                eprintln!("{}: stopping now", name(sig));
                std::process::exit(128 + sig);
            }
            eprintln!("{}: stopping at the next safe point (send it again to stop at once)", name(sig));
        }
    });
    Ok(())
}

/// The signal that asked for a stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The error that ends a command stopped by `signal`: `what` says where it stopped and how to
/// continue.
pub fn stopped(signal: i32, what: impl std::fmt::Display) -> Error {
    Error::Stopped { signal, message: format!("stopped by {}: {what}", name(signal)) }
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

#[cfg(test)]
/// Pretends `signal` arrived (tests of the stop paths).
pub fn request(signal: i32) {
    SIGNAL.store(signal, Ordering::SeqCst);
}
