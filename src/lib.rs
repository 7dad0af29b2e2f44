//! pretext: self-supervised pretraining data from data-lake tables.
//!
//! A YAML pipeline is loaded and checked ([`load_pipeline`], every problem at once with its
//! line and column), resolved into a [`Plan`] (source files listed and checked through
//! DataFusion, a tokenizer, a pretext task, the shard and seed of this process), and run as a
//! lazy [`BatchStream`] of Arrow record batches: into a Parquet export ([`export`]), into the
//! candle trainer ([`train`]), or batch by batch with the [`StreamCursor`] after each one, which
//! resumes the stream exactly ([`Plan::pass_from`], [`Plan::batches_from`]).
//!
//! Every random decision for an example is a pure function of `(seed, epoch, example_key)`, so
//! the bytes do not depend on the number of worker threads, and a stream restored from a cursor
//! delivers exactly what an uninterrupted one would have delivered next.
//!
//! ```
//! use futures::StreamExt;
//!
//! # fn main() -> pretext::Result<()> {
//! let rt = pretext::cli::runtime()?;
//! rt.block_on(async {
//!     let sets = ["stream.batch_size=8".to_string()];
//!     let pipeline = pretext::load_pipeline("pipelines/quickstart.yaml".as_ref(), &sets)?;
//!     let plan = pretext::Plan::build(pipeline, &pretext::BuildOptions::default()).await?;
//!     // The first two batches, and the cursor after each.
//!     let mut batches = plan.pass_from(pretext::Split::All, plan.epoch_start(0)).take(2);
//!     let mut last = None;
//!     while let Some(item) = batches.next().await {
//!         let (batch, cursor) = item?;
//!         assert_eq!(batch.num_rows(), 8);
//!         last = Some(cursor);
//!     }
//!     // Resuming from the second cursor delivers the third batch.
//!     let cursor: pretext::StreamCursor = serde_json::from_str(&serde_json::to_string(&last.unwrap()).unwrap()).unwrap();
//!     let (third, _) = plan.pass_from(pretext::Split::All, cursor).next().await.unwrap()?;
//!     assert_eq!(third.num_rows(), 8);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! The map of the code — the modules in data-flow order, what each owns and may import, and
//! where each cross-cutting value (seq_len, seed, cursor) is decided — is
//! `docs/architecture.md` in the repository. Everything not re-exported here is internal; the
//! `internals` feature opens it to the crate's own tests, benches and fuzz targets, without any
//! promise of stability.

/// A module public with the `internals` feature (for the crate's own tests, benches and fuzz
/// targets) and private to the crate otherwise.
macro_rules! internal_mod {
    ($name:ident) => {
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    };
}

pub mod cli;
mod error;
internal_mod!(ground);
internal_mod!(plan);
internal_mod!(schemas);
internal_mod!(sink);
internal_mod!(source);
internal_mod!(spec);
internal_mod!(stream);
internal_mod!(task);
internal_mod!(tokenize);
internal_mod!(train);
internal_mod!(vision);

pub use error::{Error, Pos, Result, SpecError, SpecErrors};
pub use ground::batches::BatchStream;
pub use plan::{BuildOptions, Plan};
pub use sink::export::ExportReport;
pub use sink::run::{run as export, ExportRequest};
pub use source::{Shard, Split};
pub use spec::{load as load_pipeline, load_str, Pipeline};
pub use stream::StreamCursor;
pub use task::causal::cu_seqlens;
pub use train::{run_pipeline as train, TrainReport, TrainRequest};
