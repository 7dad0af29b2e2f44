use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;

use crate::error::Result;
use crate::plan::{BuildOptions, Plan};
use crate::sink::preview::{
    contact_sheet, render_generic, render_images, render_mlm, render_table, MLM_LEGEND, TABLE_LEGEND,
};
use crate::spec::{TaskInput, TaskSpec};

/// Prints the first `n` examples of the stream, decoded; for image tasks optionally writes a
/// contact sheet to `out`.
pub fn run(file: &Path, n: usize, out: Option<&Path>, sets: &[String]) -> Result<i32> {
    let pipeline = crate::spec::load(file, sets)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let plan = Plan::build(pipeline, &BuildOptions::default()).await?;
        let input = plan.input;
        if out.is_some() && input != TaskInput::Image {
            eprintln!("note: `--out` writes contact sheets for image tasks only; printing the examples");
        }
        let shown = render(&plan, n, emit).await?;
        if shown.closed {
            return Ok(0);
        }
        if shown.examples == 0 {
            eprintln!("the source produced no examples (skipped: {})", plan.source.stats.snapshot());
        }
        if let (Some(path), false) = (out, shown.images.is_empty()) {
            let batch = arrow::compute::concat_batches(&shown.images[0].schema(), &shown.images)?;
            let (image, patch) = match &plan.task_spec {
                TaskSpec::ContrastiveImage(t) => (&t.image, None),
                TaskSpec::Mae(t) => (&t.image, Some(t.patch_size as usize)),
                TaskSpec::DenoiseImage(t) => (&t.image, None),
                _ => unreachable!("image tasks only"),
            };
            contact_sheet(&batch, batch.num_rows(), &crate::plan::image_out(image), patch, path)?;
            eprintln!("wrote a contact sheet of {} example(s) to `{}`", batch.num_rows(), path.display());
        } else if out.is_none() && input == TaskInput::Image && shown.examples > 0 {
            emit("(add `--out preview.png` for a contact sheet of the images)\n");
        }
        Ok(0)
    })
}

/// The first `n` examples of `plan`'s stream decoded as `pretext preview` prints them, with the
/// legend (the library form of the command, for the Python package).
pub async fn preview_text(plan: &Arc<Plan>, n: usize) -> Result<String> {
    let mut text = String::new();
    let shown = render(plan, n, |part| {
        text.push_str(part);
        true
    })
    .await?;
    if shown.examples == 0 {
        text = format!("the source produced no examples (skipped: {})\n", plan.source.stats.snapshot());
    }
    Ok(text)
}

/// What [`render`] showed.
struct Shown {
    examples: usize,
    /// The image examples shown, for a contact sheet.
    images: Vec<arrow::array::RecordBatch>,
    /// The writer refused more text (a closed pipe).
    closed: bool,
}

/// Decodes the first `n` examples and hands the text to `write` batch by batch, then the legend;
/// stops early when `write` returns `false`.
async fn render(plan: &Arc<Plan>, n: usize, mut write: impl FnMut(&str) -> bool) -> Result<Shown> {
    let mut stream = plan.stream();
    let input = plan.input;
    let mut shown = Shown { examples: 0, images: Vec::new(), closed: false };
    while shown.examples < n {
        let Some(batch) = stream.next().await else { break };
        let batch = batch?;
        let (from, take) = (shown.examples, n - shown.examples);
        let spec = &plan.task_spec;
        let text = match (spec, input) {
            (TaskSpec::Mlm(_), _) => render_mlm(&plan.tokenizer, &batch, from, take)?,
            (_, TaskInput::Image) => render_images(&batch, from, take)?,
            (_, TaskInput::Table) => render_table(&batch, spec.table_columns(), from, take)?,
            _ => render_generic(&plan.tokenizer, &batch, from, take)?,
        };
        if input == TaskInput::Image {
            shown.images.push(batch.slice(0, batch.num_rows().min(take)));
        }
        if !write(&text) {
            shown.closed = true;
            return Ok(shown);
        }
        shown.examples += batch.num_rows().min(take);
    }
    if shown.examples > 0 {
        let legend = match (&plan.task_spec, input) {
            (TaskSpec::Mlm(_), _) => Some(MLM_LEGEND),
            (_, TaskInput::Table) => Some(TABLE_LEGEND),
            _ => None,
        };
        if let Some(legend) = legend {
            shown.closed = !write(&format!("{legend}\n"));
        }
    }
    Ok(shown)
}

/// Writes to stdout; `false` when the reader went away (`pretext preview … | head`).
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok()
}
