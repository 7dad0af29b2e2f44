use std::io::Write;
use std::path::Path;

use futures::StreamExt;

use crate::error::Result;
use crate::plan::{BuildOptions, Plan};
use crate::sink::preview::{render_generic, render_mlm, MLM_LEGEND};

/// Prints the first `n` examples of the stream, decoded.
pub fn run(file: &Path, n: usize, sets: &[String]) -> Result<i32> {
    let pipeline = crate::spec::load(file, sets)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let plan = Plan::build(pipeline, &BuildOptions::default()).await?;
        let mut stream = plan.stream();
        let mut shown = 0;
        while shown < n {
            let Some(batch) = stream.next().await else { break };
            let batch = batch?;
            let text = match plan.pipeline.spec.task {
                crate::spec::TaskSpec::Mlm(_) => render_mlm(&plan.tokenizer, &batch, shown, n - shown)?,
                _ => render_generic(&plan.tokenizer, &batch, shown, n - shown)?,
            };
            if !emit(&text) {
                return Ok(0);
            }
            shown += batch.num_rows().min(n - shown);
        }
        if shown == 0 {
            eprintln!("the source produced no examples (skipped: {})", plan.source.stats.snapshot());
        } else if matches!(plan.pipeline.spec.task, crate::spec::TaskSpec::Mlm(_)) {
            emit(&format!("{MLM_LEGEND}\n"));
        }
        Ok(0)
    })
}

/// Writes to stdout; `false` when the reader went away (`pretext preview … | head`).
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok()
}
