//! The `cronq` binary: parse the command line, set up logging, run the subcommand, map errors to
//! exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cronq::cli::Cli::parse();
    cronq::cli::init_tracing(&cli.log, cli.log_format);
    let cli_json = cli.log_format == cronq::cli::LogFormat::Json;
    match cronq::cli::run(cli) {
        Ok(code) => code,
        // `cronq next … | head -1`: the reader left; that is not an error.
        Err(cronq::cli::CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            if cli_json {
                // One JSON object per line, the last one included.
                tracing::error!(message = "cronq stopped", error = %err);
            } else {
                eprintln!("error: {err}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}
