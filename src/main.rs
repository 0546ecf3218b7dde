//! promptgate's entry point: parse the command line, run it, print any error with its causes.

use clap::Parser;
use std::process::ExitCode;

/// jemalloc rather than glibc malloc: measured cheaper per request (BENCHMARKS.md, issue 22).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = promptgate::cli::Cli::parse();
    promptgate::logging::init();
    let result = promptgate::cli::execute(cli);
    // The log lines still queued go out before our own error line, and before the exit.
    promptgate::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("promptgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
