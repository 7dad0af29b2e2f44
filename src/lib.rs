//! pretext: self-supervised pretraining data from data-lake tables.
//!
//! A YAML pipeline ([`spec`]) is checked, resolved into a [`plan::Plan`] (source files through
//! DataFusion, a tokenizer, a pretext [`task`]), and run as lazy Arrow [`BatchStream`]s
//! ([`stream`]) into a sink ([`sink`]): a Parquet export with a manifest, or a preview; or into
//! a candle trainer ([`train`]) with checkpoints and exact resume.
//!
//! Every random decision for an example is a pure function of `(seed, epoch, example_key)`,
//! so output bytes do not depend on the number of worker threads.

pub mod cli;
pub mod error;
pub mod lock;
pub mod plan;
pub mod schemas;
pub mod sink;
pub mod source;
pub mod spec;
pub mod stop;
pub mod stream;
pub mod task;
pub mod tokenize;
pub mod train;
pub mod vision;

pub use error::{Error, Result};
pub use plan::{BuildOptions, Plan};
pub use spec::{load as load_pipeline, Pipeline, PipelineSpec};

/// The one data-plane type between stages: DataFusion's record batch stream.
pub type BatchStream = datafusion::execution::SendableRecordBatchStream;

impl spec::PipelineSpec {
    /// The task's name as written in YAML (`mlm`, …).
    pub fn task_name(&self) -> &'static str {
        match self.task {
            spec::TaskSpec::Mlm(_) => "mlm",
            spec::TaskSpec::Causal(_) => "causal",
            spec::TaskSpec::Span(_) => "span",
            spec::TaskSpec::ContrastiveText(_) => "contrastive_text",
            spec::TaskSpec::Denoise(_) => "denoise",
            spec::TaskSpec::ContrastiveImage(_) => "contrastive_image",
            spec::TaskSpec::Mae(_) => "mae",
            spec::TaskSpec::DenoiseImage(_) => "denoise_image",
            spec::TaskSpec::Scarf(_) => "scarf",
            spec::TaskSpec::Vime(_) => "vime",
        }
    }
}
