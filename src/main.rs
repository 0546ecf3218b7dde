//! promptgate's entry point: parse the command line, run it, print any error with its causes.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = promptgate::cli::Cli::parse();
    promptgate::logging::init();
    match promptgate::cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("promptgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
