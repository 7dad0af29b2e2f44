//! What several stages share, and nothing stage-specific: the data-plane stream type, durable
//! writes, identity hashes and the settings diff behind `--resume` checks, the named seed salts
//! every random stream is derived with, directory locks, graceful stops, and number formatting
//! for progress lines.
//!
//! Imports only [`crate::error`]; every other module may import it.

pub mod batches;
pub mod durable;
pub mod identity;
pub mod lock;
pub mod seeds;
pub mod stop;

/// 1234567 → "1.23M".
pub fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
