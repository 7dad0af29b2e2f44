use std::io::Write;
use std::path::Path;

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
        let mut stream = plan.stream();
        let mut shown = 0;
        let input = plan.input;
        if out.is_some() && input != TaskInput::Image {
            eprintln!("note: `--out` writes contact sheets for image tasks only; printing the examples");
        }
        let mut sheet: Vec<arrow::array::RecordBatch> = Vec::new();
        while shown < n {
            let Some(batch) = stream.next().await else { break };
            let batch = batch?;
            let spec = &plan.task_spec;
            let text = match (spec, input) {
                (TaskSpec::Mlm(_), _) => render_mlm(&plan.tokenizer, &batch, shown, n - shown)?,
                (_, TaskInput::Image) => render_images(&batch, shown, n - shown)?,
                (_, TaskInput::Table) => render_table(&batch, spec.table_columns(), shown, n - shown)?,
                _ => render_generic(&plan.tokenizer, &batch, shown, n - shown)?,
            };
            if input == TaskInput::Image {
                sheet.push(batch.slice(0, batch.num_rows().min(n - shown)));
            }
            if !emit(&text) {
                return Ok(0);
            }
            shown += batch.num_rows().min(n - shown);
        }
        if shown == 0 {
            eprintln!("the source produced no examples (skipped: {})", plan.source.stats.snapshot());
        } else if matches!(plan.task_spec, TaskSpec::Mlm(_)) {
            emit(&format!("{MLM_LEGEND}\n"));
        } else if input == TaskInput::Table {
            emit(&format!("{TABLE_LEGEND}\n"));
        }
        if let (Some(path), false) = (out, sheet.is_empty()) {
            let batch = arrow::compute::concat_batches(&sheet[0].schema(), &sheet)?;
            let (image, patch) = match &plan.task_spec {
                TaskSpec::ContrastiveImage(t) => (&t.image, None),
                TaskSpec::Mae(t) => (&t.image, Some(t.patch_size as usize)),
                TaskSpec::DenoiseImage(t) => (&t.image, None),
                _ => unreachable!("image tasks only"),
            };
            contact_sheet(&batch, batch.num_rows(), &crate::plan::image_out(image), patch, path)?;
            eprintln!("wrote a contact sheet of {} example(s) to `{}`", batch.num_rows(), path.display());
        } else if out.is_none() && input == TaskInput::Image && shown > 0 {
            emit("(add `--out preview.png` for a contact sheet of the images)\n");
        }
        Ok(0)
    })
}

/// Writes to stdout; `false` when the reader went away (`pretext preview … | head`).
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok()
}
