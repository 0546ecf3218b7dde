//! promptgate's entry point: parse the command line, run it, print any error with its causes.

use clap::Parser;
use std::process::ExitCode;

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
