//! Rows from the data lake through DataFusion. Files are scanned one at a time in sorted order
//! (DataFusion does not promise order across partitions), each registered as the table `source`
//! for the optional SQL, so the scan order — and every key derived from it — is deterministic.
//!
//! Output: a [`BatchStream`](crate::ground::batches::BatchStream) with columns
//! `example_key: UInt64` and `text: Utf8View` (or the record columns of image and table tasks);
//! rows with a null or blank text are skipped and counted in [`SourceStats`].
//!
//! One file per idea, in the order they build on each other: [`layout`] (files, row groups,
//! shards: a leaf), [`stats`], [`position`], [`split`], [`store`] (object stores), [`delta`],
//! [`listing`], [`columns`], [`frame`] (DataFusion sessions and SQL), [`flat`] (the direct
//! decoder of ready-made examples), [`row_groups`], [`open`] (the [`Source`] a pipeline
//! resolves to), [`identity`], [`rows`] and [`scan`]. This file only names what the rest of
//! the crate uses.

mod columns;
mod delta;
mod flat;
mod frame;
mod identity;
mod layout;
mod listing;
mod open;
mod position;
mod row_groups;
mod rows;
mod scan;
mod split;
mod stats;
mod store;

pub use columns::{Columns, ImageKind};
pub use identity::describe_data_change;
pub use layout::Shard;
pub use open::Source;
pub use position::{ScanStart, WindowStarts};
pub use scan::ScanOptions;
pub use split::{Blocks, Split};
pub use stats::SourceStats;
pub use store::{connect as connect_store, describe as describe_store_error, is_remote, list as list_store, Remote};
