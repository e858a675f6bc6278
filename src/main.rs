//! The `cairn` command: `cairn agent ...` runs an agent; other subcommands talk to one.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// Under `--cfg madsim` agents run inside the simulator (`sim/run`), not as a process.
#[cfg(madsim)]
fn main() {
    eprintln!("this is a simulator build; run scenarios with sim/run");
    std::process::exit(2);
}

#[cfg(not(madsim))]
mod cli {
    use std::process::ExitCode;
    use std::sync::Arc;

    use cairn::config::{self, AgentConfig, ConfigError, LogLevel};
    use cairn::storage::{Disk, DiskError, FileDisk, MemDisk};

    fn usage() -> String {
        let mut text = String::from("Usage: cairn <command> [args]\n\nCommands:\n");
        text.push_str("    agent        Runs a cairn agent (see 'cairn agent -h')\n");
        for (name, help) in cairn::cli::COMMANDS {
            text.push_str(&format!("    {name:<12} {help}\n"));
        }
        text.push_str("    version      Prints the cairn version\n");
        text
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.first().map(String::as_str) {
            Some("agent") => agent(&args[1..]),
            Some("version" | "-version" | "--version" | "-v") => {
                println!("cairn v{}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            Some("help" | "-h" | "-help" | "--help") | None => {
                print!("{}", usage());
                if args.is_empty() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Some(command) => match cairn::cli::run(command, &args[1..]) {
                Some(Ok(output)) => {
                    print!("{output}");
                    ExitCode::SUCCESS
                }
                Some(Err(message)) => {
                    eprintln!("{message}");
                    ExitCode::from(1)
                }
                None => {
                    eprintln!("cairn: unknown command {command:?}\n\n{}", usage());
                    ExitCode::from(1)
                }
            },
        }
    }

    fn agent(args: &[String]) -> ExitCode {
        let config = match config::load_agent_config(args, &cairn::io::hostname()) {
            Ok(config) => config,
            Err(ConfigError::Help(text)) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("==> {e}");
                return ExitCode::from(1);
            }
        };
        init_logging(config.log_level);
        for key in &config.ignored_keys {
            tracing::warn!("config key not implemented by cairn, ignored: {key}");
        }
        for warning in &config.local.warnings {
            tracing::warn!("{warning}");
        }
        let (services, checks) = (config.local.services.len(), config.local.all_checks().count());
        tracing::info!(services, checks, "loaded service and check definitions");
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("==> cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
        // `cairn reload` and SIGHUP read the same flags and files again.
        let (args, hostname) = (args.to_vec(), cairn::io::hostname());
        let reload: cairn::agent::ConfigLoader = Arc::new(move || config::load_agent_config(&args, &hostname));
        match runtime.block_on(run_agent(config, reload)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("==> {e}");
                ExitCode::from(1)
            }
        }
    }

    async fn run_agent(config: AgentConfig, reload: cairn::agent::ConfigLoader) -> Result<(), String> {
        let raft_dir = config.data_dir.as_ref().map(|dir| dir.join("raft"));
        let disk: Arc<dyn Disk> = match (&raft_dir, config.dev) {
            (_, true) => Arc::new(MemDisk::default()),
            (Some(dir), false) => Arc::new(FileDisk::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?),
            (None, false) => unreachable!("config validation requires data_dir unless -dev"),
        };
        let environment = cairn::node::Environment { reload: Some(reload), ..Default::default() };
        let node = cairn::node::start_with(&config, disk, environment).await.map_err(|e| match (e, &raft_dir) {
            (cairn::node::StartError::Disk(e @ DiskError::Corrupt { .. }), Some(dir)) => format!(
                "{}: {e}\n    The server refuses to start rather than drop data. Restore this directory from a \
                 backup, or remove it and let the server rejoin and catch up from the others.",
                dir.display()
            ),
            (e, _) => e.to_string(),
        })?;
        println!("==> cairn agent running!");
        println!("           Node name: '{}'", config.node_name);
        println!("          Datacenter: '{}'", config.datacenter);
        println!("              Server: {} (bootstrap: {:?})", config.server, config.bootstrap_expect);
        println!("         Client Addr: {} (HTTP: {})", config.client_addr, node.http_addr.port());
        match node.rpc_addr {
            Some(rpc) => {
                println!("        Cluster Addr: {} (LAN: {}, RPC: {})", rpc.ip(), node.lan_addr.port(), rpc.port())
            }
            None => println!("        Cluster Addr: {} (LAN: {})", node.lan_addr.ip(), node.lan_addr.port()),
        }
        println!("             Gossip: encrypt: {}", node.gossip.keyring().is_some());
        println!("==> Log data will now stream in as it occurs:");
        let agent = node.agent.clone();
        tokio::spawn(reload_on_sighup(agent.clone()));
        let leave = tokio::select! {
            signal = wait_for_shutdown_signal() => {
                let leave = match signal {
                    Signal::Interrupt => !config.gossip.skip_leave_on_interrupt,
                    Signal::Terminate => config.gossip.leave_on_terminate,
                };
                tracing::info!(?signal, leave, "caught signal, shutting down");
                leave
            }
            _ = agent.left() => {
                tracing::info!("left the pool, shutting down");
                false
            }
        };
        if leave {
            node.leave_and_shutdown().await;
        } else {
            node.shutdown().await;
        }
        Ok(())
    }

    /// SIGHUP reloads the services and checks of the config files, as `cairn reload` does.
    async fn reload_on_sighup(agent: Arc<cairn::agent::Agent>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => return tracing::warn!(error = %e, "cannot install a SIGHUP handler; use cairn reload"),
        };
        while hangup.recv().await.is_some() {
            tracing::info!("caught SIGHUP, reloading");
            if let Err(e) = agent.reload() {
                tracing::error!("reload: {e}");
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Signal {
        Interrupt,
        Terminate,
    }

    async fn wait_for_shutdown_signal() -> Signal {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Signal::Interrupt,
            _ = terminate.recv() => Signal::Terminate,
        }
    }

    fn init_logging(level: LogLevel) {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        // Our own crate at the chosen level; openraft's chatter only from warn up unless asked.
        let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,cairn={level}")));
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
}
