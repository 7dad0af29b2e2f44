//! Counters of what a source read: rows, skipped rows and why, files read and pruned, row
//! groups opened. Shared with the sinks for their summaries and manifests, and saved with a
//! scan position so a resumed export counts every row once.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the source read, shared with the sink for its summary and manifest.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub rows: AtomicU64,
    pub null_text: AtomicU64,
    pub blank_text: AtomicU64,
    pub documents: AtomicU64,
    /// Files whose rows `source.sql` rules out from their partition values alone: never read.
    pub files_pruned: AtomicU64,
    /// Files scanned.
    pub files_read: AtomicU64,
    /// Image tasks: rows whose image is null (skipped).
    pub null_image: AtomicU64,
    /// Image tasks: images that could not be decoded (skipped), and the first few of them.
    pub undecodable: AtomicU64,
    pub undecodable_examples: std::sync::Mutex<Vec<String>>,
    /// Row groups this process opened (sources read by row group; every scan counts, and
    /// nothing restores it on resume): how much of the data a rank touched.
    pub row_groups_opened: AtomicU64,
}

/// How many undecodable images are named in the summary and manifest.
pub const NAMED_UNDECODABLE: usize = 5;

impl SourceStats {
    /// rows, null texts, blank texts, documents, null images, files read, files pruned.
    pub fn counters(&self) -> [u64; 7] {
        [
            self.rows.load(Ordering::Relaxed),
            self.null_text.load(Ordering::Relaxed),
            self.blank_text.load(Ordering::Relaxed),
            self.documents.load(Ordering::Relaxed),
            self.null_image.load(Ordering::Relaxed),
            self.files_read.load(Ordering::Relaxed),
            self.files_pruned.load(Ordering::Relaxed),
        ]
    }

    /// Sets the counters (a resumed scan continues from the values at its start).
    pub fn restore(&self, c: [u64; 7]) {
        let all = [
            &self.rows,
            &self.null_text,
            &self.blank_text,
            &self.documents,
            &self.null_image,
            &self.files_read,
            &self.files_pruned,
        ];
        for (a, v) in all.into_iter().zip(c) {
            a.store(v, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "rows_read": self.rows.load(Ordering::Relaxed),
            "skipped_null_text": self.null_text.load(Ordering::Relaxed),
            "skipped_blank_text": self.blank_text.load(Ordering::Relaxed),
            "documents": self.documents.load(Ordering::Relaxed),
            "files_read": self.files_read.load(Ordering::Relaxed),
            "files_pruned": self.files_pruned.load(Ordering::Relaxed),
        });
        let (nulls, bad) = (self.null_image.load(Ordering::Relaxed), self.undecodable.load(Ordering::Relaxed));
        if nulls > 0 || bad > 0 {
            v["skipped_null_image"] = nulls.into();
            v["skipped_undecodable_image"] = bad.into();
            let named = self.undecodable_examples.lock().map(|v| v.clone()).unwrap_or_default();
            v["undecodable_images"] = named.into();
        }
        v
    }

    /// Counts an image that could not be decoded, naming the first few.
    pub fn record_undecodable(&self, key: u64, reason: &str) {
        let n = self.undecodable.fetch_add(1, Ordering::Relaxed);
        if (n as usize) < NAMED_UNDECODABLE {
            if let Ok(mut v) = self.undecodable_examples.lock() {
                v.push(format!("example_key {key}: {reason}"));
            }
            // The target users filter on (`PRETEXT_LOG=pretext::source=…`), whichever file logs.
            tracing::warn!(target: "pretext::source", "skipping an undecodable image (example_key {key}): {reason}");
        }
    }
}
