use clap::Parser;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRETEXT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
    let cli = pretext::cli::Cli::parse();
    let code = match pretext::cli::run(cli) {
        Ok(code) => code,
        Err(e @ (pretext::Error::Spec(_) | pretext::Error::Stopped { .. })) => {
            eprintln!("{e}");
            e.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
