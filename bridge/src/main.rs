//! The `twinzo-bridge` command: parses the CLI, sets up logging, loads the configuration (a
//! bad one is one line per problem on stderr and exit code 64), then calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use twinzo_bridge::config::{Config, LogFormat, EXIT_BAD_CONFIG};
use twinzo_bridge::{
    app, calibrate, check, dead_letters,
    outbox::{Dedup, Outbox},
    simulate, stub,
};

#[derive(Parser)]
#[command(
    name = "twinzo-bridge",
    version,
    about = "ATI robot telemetry from MQTT into Twinzo"
)]
struct Cli {
    /// TOML configuration file (exact path); BRIDGE_... variables override it.
    #[arg(long, global = true, env = "BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge.
    Run,
    /// Take this member (its mqtt.client_id) out of its shared group without losing its
    /// share: unsubscribe, deliver what the broker still holds for it, remove its session.
    Retire,
    /// Validate the configuration and print it with secrets masked.
    CheckConfig,
    /// Log in to the broker and to Twinzo with the configuration; one line per step.
    Check,
    /// Run the Twinzo stand-in.
    Stub(stub::StubArgs),
    /// Publish a simulated ATI (or VDA 5050) fleet.
    Simulate(simulate::SimulateArgs),
    /// Fit the metres-to-millimetres transform from surveyed points.
    Calibrate(calibrate::CalibrateArgs),
    /// Inspect, replay or purge dead letters (with the bridge stopped).
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// One line per dead letter.
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter in full.
    Show { id: u64 },
    /// Read dead letters through the current configuration again (all when no id is given).
    Replay { ids: Vec<u64> },
    /// Delete dead letters (`--all`, or the given ids).
    Purge {
        ids: Vec<u64>,
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Outbox writes run on blocking threads and redb serializes them anyway: a few threads
    // suffice, and each extra one would bring its own malloc arena (resident memory).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .expect("tokio runtime");
    let config = || match Config::load(cli.config.as_deref()) {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(EXIT_BAD_CONFIG as u8))
        }
    };
    let result: anyhow::Result<ExitCode> = match cli.command {
        command @ (Command::Run | Command::Retire) => {
            let mode = if matches!(command, Command::Retire) {
                app::Mode::Retire
            } else {
                app::Mode::Run
            };
            let config = match config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(config.log.format, &config.log.level);
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(on_signal(shutdown.clone()));
                app::run(config, shutdown, mode)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            })
        }
        Command::CheckConfig => match config() {
            Ok(c) => {
                print!("{}", c.to_masked_toml());
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => return code,
        },
        Command::Check => {
            let config = match config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(config.log.format, "warn");
            let steps = runtime.block_on(check::run(&config));
            steps.iter().for_each(|s| println!("{s}"));
            Ok(if steps.iter().all(|s| s.result.is_ok()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Stub(args) => {
            init_logging(LogFormat::Text, "info");
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(on_signal(shutdown.clone()));
                stub::run(args, shutdown).await.map(|()| ExitCode::SUCCESS)
            })
        }
        Command::Simulate(args) => {
            init_logging(LogFormat::Text, "info");
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(on_signal(shutdown.clone()));
                let report = simulate::run(args, shutdown).await?;
                println!("{report}");
                Ok(if report.failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        Command::Calibrate(args) => calibrate::run(&args).map(|report| {
            print!("{report}");
            ExitCode::SUCCESS
        }),
        Command::DeadLetters(command) => {
            let config = match config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            dead_letter_command(&config, command)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", twinzo_bridge::error_chain(e.as_ref()));
        ExitCode::FAILURE
    })
}

fn dead_letter_command(config: &Config, command: DeadLetterCommand) -> anyhow::Result<ExitCode> {
    let outbox = Outbox::open(&config.outbox.path, Dedup::from(&config.outbox))?;
    match command {
        DeadLetterCommand::List { after, limit } => {
            print!("{}", dead_letters::list(&outbox, after, limit)?);
        }
        DeadLetterCommand::Show { id } => println!("{}", dead_letters::show(&outbox, id)?),
        DeadLetterCommand::Replay { ids } => {
            let r = dead_letters::replay(&outbox, config, &ids)?;
            println!(
                "replayed: {} queued, {} failed again, {} skipped",
                r.queued, r.failed_again, r.skipped
            );
        }
        DeadLetterCommand::Purge { ids, all } => {
            anyhow::ensure!(all || !ids.is_empty(), "name dead letter ids, or --all");
            let n = outbox.purge_dead(if all { None } else { Some(&ids) })?;
            println!("purged {n} dead letters");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Crates whose debug and trace output may contain credentials.
const QUIET_LIBRARIES: [&str; 9] = [
    "tungstenite",
    "tokio_tungstenite",
    "async_tungstenite",
    "rumqttc",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
];

fn init_logging(format: LogFormat, level: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Libraries that trace raw frames and bodies, which hold the MQTT and Twinzo passwords,
    // are capped whatever the filter asks: secrets never reach the log, not even at trace.
    for noisy in QUIET_LIBRARIES {
        if let Ok(directive) = format!("{noisy}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Cancels `shutdown` on SIGTERM (Railway, Docker) or SIGINT (Ctrl-C).
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
    shutdown.cancel();
}
