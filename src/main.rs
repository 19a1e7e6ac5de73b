//! The `wghook` binary: parse the command line, start logging, run, and turn
//! an error into an exit code with its whole cause chain.

use std::process::ExitCode;

use clap::Parser;
use wghook::cli::{Cli, Command};
use wghook::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        // The demo prints the webhooks it receives; keep the log to warnings.
        Command::Demo => "warn",
        _ => "info",
    };
    if let Err(e) = logging::init(cli.log_format, cli.log_level.as_deref(), default_level) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wghook::cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
