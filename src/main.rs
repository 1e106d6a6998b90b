//! The `cronq` binary: parse the command line, set up logging, run the subcommand, map errors to
//! exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator. Dispatching allocates nine small buffers per record
/// (rskafka takes each record as owned key, value and header map) and frees them in bulk once the
/// batch is acked; glibc's malloc and free took about 40% of a partition task's CPU in a profile,
/// and mimalloc cut the dispatch bench's client CPU by 15-21% (README, "Dispatch").
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
