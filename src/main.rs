//! The `rotagate` command line. Only argument parsing and dispatch live here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rotagate::logging::{self, LogFormat};

// glibc malloc serialises on arena locks under proxy load (measured with perf:
// ~25% of CPU in malloc/free and their futexes); mimalloc does not
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Default config file location.
const DEFAULT_CONFIG: &str = "config/rotagate.toml";

#[derive(Parser, Debug)]
#[command(
    name = "rotagate",
    version,
    about = "Edge reverse proxy that owns the session cookie life cycle"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "pretty", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file and warn about rules that can never match.
    Check {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show which rule a request matches and why.
    Explain {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Request method, e.g. GET.
        method: String,
        /// Path (`/a?b=1`) or URL (`https://app.example.com/a`).
        path_or_url: String,
        /// Request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Print a new random secret (32 random bytes, base64url).
    Keygen,
    /// Start a built-in demo app with rotagate in front of it.
    Demo {
        /// Port for the proxy on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            // held to the end of `main`: dropping it writes out the queued log lines
            let _log = logging::init(cli.log_format);
            match rotagate::cli::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rotagate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match rotagate::config::load(&config) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    println!("warning: {w}");
                }
                if cfg.listen.case_insensitive_paths {
                    println!("note: listen.case_insensitive_paths = true: route patterns match paths in any letter case (/Premium/x is matched as /premium/x), for apps that serve paths case-insensitively (IIS, Express); Next.js itself is case-sensitive");
                }
                if cfg.listen.path_strictness == rotagate::config::PathStrictness::Lenient {
                    println!("note: listen.path_strictness = \"lenient\": paths with ';' parameters, '//' or trailing dots are forwarded as sent and matched as servers that cut, merge or drop them read them");
                }
                println!("{}: ok ({} routes)", config.display(), cfg.routes.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Explain {
            config,
            method,
            path_or_url,
            headers,
        } => {
            let cfg = match rotagate::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let req = rotagate::explain::ExplainRequest {
                method,
                target: path_or_url,
                headers,
            };
            match rotagate::explain::explain(&cfg, &req) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rotagate explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Keygen => match rotagate::cli::keygen() {
            Ok(secret) => {
                // the one command whose job is to print a secret
                println!("{secret}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rotagate keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { port } => {
            let _log = logging::init(cli.log_format);
            match rotagate::demo::run(port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rotagate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
