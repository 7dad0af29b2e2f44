use std::path::Path;

use crate::error::Result;

/// Draws a run's metrics as PNG and SVG.
pub fn run(run_dir: &Path) -> Result<i32> {
    let r = crate::train::plot::plot(run_dir)?;
    eprintln!("wrote `{}` and `{}` ({} points)", r.png.display(), r.svg.display(), r.points);
    if r.font.is_none() {
        eprintln!(
            "note: no TrueType font found, so the charts have no labels; set PRETEXT_FONT=/path/to/font.ttf \
             (e.g. from the fonts-dejavu-core package)"
        );
    }
    Ok(0)
}
