//! The `cronq` binary: parse the command line, set up logging, run the subcommand, map errors to
//! exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cronq::cli::Cli::parse();
    cronq::cli::init_tracing(&cli.log);
    match cronq::cli::run(cli) {
        Ok(code) => code,
        // `cronq next … | head -1`: the reader left; that is not an error.
        Err(cronq::cli::CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
