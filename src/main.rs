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

fn main() {
    tune_allocator();
    std::process::exit(pretext::cli::main(std::env::args_os()));
}
