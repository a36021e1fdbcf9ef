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
        /// Take the listening sockets over from the rotagate running on
        /// `listen.upgrade_socket` (zero-downtime upgrade); fails if none runs there.
        #[arg(long)]
        upgrade: bool,
        /// Reload on SIGHUP only, not when the config file or a file it reads changes.
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config file and warn about rules that can never match.
    Check {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also print the configuration in force: the file with the environment's
        /// `ROTAGATE_<SECTION>__<KEY>` overrides applied, secrets redacted.
        #[arg(long)]
        print_effective: bool,
    },
    /// Check a running proxy's liveness (`/healthz` on its admin listener): exit 0 when
    /// healthy, 1 otherwise. For container health checks without curl.
    Health {
        /// Admin listener address (`127.0.0.1:9091`); default: the config file's
        /// `admin.address` when the file exists, else 127.0.0.1:9091.
        #[arg(long)]
        admin: Option<String>,
        /// Config file (read only without --admin).
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
        /// Vault mode: the browser holds only a rotating handle.
        #[arg(long)]
        vault: bool,
    },
    /// Vault sessions of a running proxy (through its admin listener and `admin.token`).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Subcommand, Debug)]
enum SessionsAction {
    /// End sessions: one login (`--family`) or every login of a user (`--subject`).
    Revoke {
        /// Config file of the running proxy (admin address and token).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Every family of this subject (e.g. after a password change).
        #[arg(long, conflicts_with = "family", required_unless_present = "family")]
        subject: Option<String>,
        /// One family id.
        #[arg(long)]
        family: Option<String>,
    },
    /// List a user's families: ids, created, last seen, generation (never secrets).
    List {
        /// Config file of the running proxy (admin address and token).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The subject.
        #[arg(long)]
        subject: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            no_watch,
            upgrade,
        } => {
            // held to the end of `main`: dropping it writes out the queued log lines
            let _log = logging::init(cli.log_format);
            let opts = rotagate::cli::RunOptions {
                watch: !no_watch,
                upgrade,
            };
            match rotagate::cli::run(&config, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rotagate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health { admin, config } => match rotagate::cli::health(admin.as_deref(), &config)
        {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rotagate health: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check {
            config,
            print_effective,
        } => match rotagate::config::load(&config) {
            Ok(cfg) => {
                if print_effective {
                    match rotagate::config::effective_text(&config) {
                        Ok(text) => println!("{}", text.trim_end()),
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                for w in &cfg.warnings {
                    println!("warning: {w}");
                }
                if cfg.listen.case_insensitive_paths {
                    println!("note: listen.case_insensitive_paths = true: route patterns match paths in any letter case (/Premium/x is matched as /premium/x), for apps that serve paths case-insensitively (IIS, Express); Next.js itself is case-sensitive");
                }
                if cfg.listen.path_strictness == rotagate::config::PathStrictness::Lenient {
                    println!("note: listen.path_strictness = \"lenient\": paths with ';' parameters, '//' or trailing dots are forwarded as sent and matched as servers that cut, merge or drop them read them");
                }
                if let Some(t) = &cfg.listen.tls {
                    // names only: certificates are public, keys are never shown
                    let names: Vec<String> = t
                        .certificates
                        .list
                        .iter()
                        .map(|c| c.names.join(","))
                        .collect();
                    println!(
                        "tls: {} with {} certificate(s) [{}] (the first is the default); redirect_http = {}; hsts = {}",
                        t.address,
                        names.len(),
                        names.join("; "),
                        t.redirect_http,
                        t.hsts.as_deref().unwrap_or("none"),
                    );
                }
                if let Some(s) = &cfg.session {
                    if let Some(v) = s.mode.vault() {
                        // settings only: the secrets are counted, never shown
                        let store = match &v.store {
                            rotagate::config::StoreSpec::Memory => {
                                "memory (this process only)".to_string()
                            }
                            rotagate::config::StoreSpec::Embedded(p) => {
                                format!("embedded {}", p.display())
                            }
                            // the URL never holds a password (validation refuses one)
                            rotagate::config::StoreSpec::Redis(r) => format!(
                                "redis {}{}",
                                r.url,
                                if r.password.is_some() {
                                    " (password from its reference)"
                                } else {
                                    ""
                                }
                            ),
                        };
                        println!(
                            "session: vault mode: handle cookie {:?}{}, capture {:?}, rotate_every {}s (±10 %), idle_timeout {}s, absolute_timeout {}s, slack {}s, store {store}, {} secret(s), adopt_existing {}",
                            v.cookie,
                            if v.attributes.secure { " (Secure)" } else { "" },
                            v.capture,
                            s.rotate_every.as_secs(),
                            s.idle_timeout.map_or(0, |d| d.as_secs()),
                            s.absolute_timeout.as_secs(),
                            v.slack.as_secs(),
                            v.secrets.len(),
                            v.adopt_existing,
                        );
                    }
                }
                if cfg.admin.as_ref().is_some_and(|a| a.token.is_some()) {
                    println!("admin: sessions API on (admin.token set)");
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
        Command::Sessions { action } => {
            use rotagate::cli::SessionsCommand;
            let (config, cmd) = match action {
                SessionsAction::Revoke {
                    config,
                    subject: Some(s),
                    ..
                } => (config, SessionsCommand::RevokeSubject(s)),
                SessionsAction::Revoke {
                    config,
                    family: Some(f),
                    ..
                } => (config, SessionsCommand::RevokeFamily(f)),
                SessionsAction::Revoke { .. } => {
                    eprintln!("rotagate sessions revoke: give --subject or --family");
                    return ExitCode::from(2);
                }
                SessionsAction::List { config, subject } => {
                    (config, SessionsCommand::List(subject))
                }
            };
            match rotagate::cli::sessions(&config, &cmd) {
                Ok(text) => {
                    println!("{}", text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rotagate sessions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { port, vault } => {
            let _log = logging::init(cli.log_format);
            match rotagate::demo::run(port, vault) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rotagate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
