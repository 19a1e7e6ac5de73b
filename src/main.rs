//! The `wghook` binary: parse the command line, start logging, run, and turn
//! an error into an exit code with its whole cause chain (printed with a
//! `<3>` journal priority when stderr is the journal, see
//! [`wghook::cli::print_error`]).

use std::process::ExitCode;

use clap::Parser;
use wghook::cli::{print_error, Cli, Command};
use wghook::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        // The demo prints the webhooks it receives; keep the log to warnings.
        Command::Demo => "warn",
        _ => "info",
    };
    if let Err(e) = logging::init(cli.log_format, cli.log_level.as_deref(), default_level) {
        print_error(&e.to_string());
        return ExitCode::from(2);
    }
    // The daemon (and the demo, which runs one) use a thread per core; a
    // one-shot command one thread, which keeps `wghook peers` small (each
    // worker thread costs a stack and a malloc arena).
    let runtime = match cli.command {
        Command::Run | Command::Demo => tokio::runtime::Runtime::new(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wghook::cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            print_error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
