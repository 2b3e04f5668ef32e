//! The `profiler` binary: parses the command line, sets up logging, runs the command, and turns
//! any error into one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use anyhow::Context as _;
use std::io::IsTerminal as _;

use clap::Parser as _;
use profiler::{
    cli::{Cli, Command},
    recorder,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Before any thread: the commands let them through once they handle them.
    profiler::stop_signals::hold();
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let warnings = match &mut cli.command {
        Command::Record(args) => match args.check() {
            Ok(warnings) => warnings,
            Err(message) => {
                eprintln!("error: {message} (see `profiler record --help`)");
                return ExitCode::from(2);
            }
        },
        _ => Vec::new(),
    };
    init_logging(cli.verbose);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    profiler::report::files::set_read_limits(cli.command.read_limits());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", dedup_chain(&chain));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    raise_open_file_limit(matches!(cli.command, Command::Record(_)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Record(args) => {
            runtime
                .block_on(recorder::record(&args))
                .map_err(|err| anyhow::anyhow!(profiler::error_chain(&err)))?;
        }
        Command::Report(args) => {
            // A report ends by itself; a signal ends it the default way.
            profiler::stop_signals::release();
            profiler::report::run(&args.into())
                .map_err(|err| anyhow::anyhow!(profiler::error_chain(&err)))?;
        }
        Command::Serve(args) => {
            runtime
                .block_on(profiler::serve::serve(
                    &args.dir,
                    args.listen,
                    profiler::serve::WebOptions::serve(
                        args.listeners.max_connections as usize,
                        args.listeners.allowed_hosts,
                    ),
                ))
                .map_err(|err| anyhow::anyhow!(profiler::error_chain(&err)))?;
        }
    }
    Ok(())
}

/// Help and version print as clap formats them; a usage error becomes one line.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("error: {first} (see `profiler --help`)");
    ExitCode::from(2)
}

/// Joins an error chain on one line, skipping a cause its wrapper already quoted.
fn dedup_chain(chain: &[String]) -> String {
    let mut line = String::new();
    for part in chain {
        if !line.ends_with(part.as_str()) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(part);
        }
    }
    line
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Every mapped file of every process is held open until its samples are symbolized, and the
/// profiles are written beside the listeners' connections: lift the soft descriptor limit to the
/// hard one, before the listeners size their connection caps from it (an eighth each). Said on
/// the log when `announce` (a recorder), else only with `-v`.
fn raise_open_file_limit(announce: bool) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                let line = format!(
                    "open-file limit raised from {soft} to {}: mapped files are held open for \
                     symbolization, and profiles must still be written while clients are connected",
                    limit.rlim_max
                );
                if announce {
                    tracing::info!("{line}");
                } else {
                    tracing::debug!("{line}");
                }
            } else {
                tracing::warn!(
                    "could not raise the open-file limit from {soft} to {}: {}",
                    limit.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}
