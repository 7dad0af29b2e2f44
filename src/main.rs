/// glibc raises its mmap threshold after freeing a large block, so later large buffers (a
/// file's text column, a row group) come from the heap and fragment it: peak memory then grows
/// with the number of files read. A fixed threshold keeps large buffers in mmap, returned on
/// free, and memory flat (measured with `benches/rss.sh`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Candle runs its element-wise maps of 64K values or more on a thread pool of its own, beside
/// rayon's, whose workers spin 25,000 times before they park: on the cores that rayon's GEMMs and
/// the trainer's kernels need. Without a worker (`CANDLE_NUM_THREADS=1`) those maps run on the
/// calling thread. On 2 cores that made training 1.12-1.26× faster on one machine type and
/// 4.5-8.7× on another, with the same losses (benches/RESULTS.md). A value the user set is kept.
fn tune_candle() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called first in `main`, before any other thread exists to read the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

fn main() {
    tune_candle();
    tune_allocator();
    std::process::exit(pretext::cli::main(std::env::args_os()));
}
