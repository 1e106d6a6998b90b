//! The `cronq` binary: parse the command line, set up logging, run the subcommand, map errors to
//! exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator. Dispatching allocates about ten small buffers per
/// record (rskafka takes each record as owned key, value and header map) and frees them in
/// bulk once the batch is sent; glibc's malloc spent about a third of the dispatch path's time
/// there (README, "Dispatch").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
