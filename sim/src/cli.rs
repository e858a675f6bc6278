//! The command line of `cairn-sim` (see `sim/run`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::runner::{self, RunReport};
use crate::scenario::AnyScenario;

const USAGE: &str = "\
usage: sim/run <scenario.toml> --seed N [--trace]
       sim/run <scenario.toml> --seeds A..B [--jobs J]
       sim/run <scenario.toml> --seed N --check-determinism

--seed N             run one seed; prints seed=, trace= (digest of the event trace) and PASS or FAIL
--seeds A..B         run seeds A to B inclusive, each in its own process, J at a time (default 2)
--trace              also print every event of the run
--check-determinism  run the seed twice in separate processes and compare the traces
";

enum Mode {
    One { seed: u64, print_trace: bool },
    Range { first: u64, last: u64, jobs: usize },
    Determinism { seed: u64 },
}

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, mode) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let scenario = match AnyScenario::load(&path) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match mode {
        Mode::One { seed, print_trace } => run_one(&path, &scenario, seed, print_trace),
        Mode::Range { first, last, jobs } => run_range(&path, first, last, jobs),
        Mode::Determinism { seed } => check_determinism(&path, seed),
    }
}

fn parse(args: &[String]) -> Result<(PathBuf, Mode), String> {
    let path = args.first().filter(|a| !a.starts_with('-')).ok_or("missing scenario file")?;
    let mut seed = None;
    let mut range = None;
    let mut jobs = 2usize;
    let (mut print_trace, mut determinism) = (false, false);
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let mut value = |name: &str| rest.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seed" => seed = Some(value("--seed")?.parse::<u64>().map_err(|e| format!("--seed: {e}"))?),
            "--seeds" => range = Some(parse_range(&value("--seeds")?)?),
            "--jobs" => jobs = value("--jobs")?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--trace" => print_trace = true,
            "--check-determinism" => determinism = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mode = match (seed, range) {
        (Some(seed), None) if determinism => Mode::Determinism { seed },
        (Some(seed), None) => Mode::One { seed, print_trace },
        (None, Some((first, last))) => Mode::Range { first, last, jobs: jobs.max(1) },
        _ => return Err("give exactly one of --seed N or --seeds A..B".into()),
    };
    Ok((PathBuf::from(path), mode))
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once("..").ok_or(format!("--seeds {text:?}: expected A..B"))?;
    let first: u64 = a.parse().map_err(|e| format!("--seeds {text:?}: {e}"))?;
    let last: u64 = b.trim_start_matches('=').parse().map_err(|e| format!("--seeds {text:?}: {e}"))?;
    if first > last {
        return Err(format!("--seeds {text:?}: empty range"));
    }
    Ok((first, last))
}

/// The command that reproduces a seed's run.
pub fn replay_command(path: &Path, seed: u64) -> String {
    format!("sim/run {} --seed {seed}", path.display())
}

/// Run one seed of any kind of scenario.
pub fn run_scenario(scenario: &AnyScenario, seed: u64) -> RunReport {
    match scenario {
        AnyScenario::Raft(s) => runner::run(s, seed),
        AnyScenario::Gossip(s) => crate::gossip_run::run(s, seed),
    }
}

fn run_one(path: &Path, scenario: &AnyScenario, seed: u64, print_trace: bool) -> ExitCode {
    println!("scenario={} seed={seed}", scenario.name());
    let wall = std::time::Instant::now();
    let report = std::panic::catch_unwind(|| run_scenario(scenario, seed));
    let wall_s = wall.elapsed().as_secs_f64();
    match report {
        Ok(report) => {
            if print_trace {
                for line in &report.trace {
                    println!("event {line}");
                }
            }
            print_report(path, scenario, &report, wall_s)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            println!("trace=none (the run panicked)");
            println!("FAIL invariant=no-panic: {message}");
            println!("replay: {}", replay_command(path, seed));
            ExitCode::from(1)
        }
    }
}

fn print_report(path: &Path, scenario: &AnyScenario, report: &RunReport, wall_s: f64) -> ExitCode {
    let s = &report.stats;
    println!("trace={:016x}", report.digest);
    if let AnyScenario::Gossip(_) = scenario {
        println!(
            "stats {} sim_s={:.1} wall_s={:.2} speed={:.0}x",
            s.notes,
            s.sim_ms as f64 / 1000.0,
            wall_s,
            s.sim_ms as f64 / 1000.0 / wall_s.max(1e-9)
        );
    } else {
        println!(
        "stats ops={} acked_writes={} indeterminate={} failed={} leader_terms={} failover_ms={:?} recovery_ms={}{}{} sim_s={:.1} wall_s={:.2} speed={:.0}x",
        s.operations,
        s.acknowledged_writes,
        s.indeterminate,
        s.failed,
        s.leader_terms,
        s.failover_ms,
        s.recovery_ms.map_or("none".into(), |ms| ms.to_string()),
        if s.notes.is_empty() { "" } else { " " },
        s.notes,
        s.sim_ms as f64 / 1000.0,
        wall_s,
        s.sim_ms as f64 / 1000.0 / wall_s.max(1e-9),
    );
    }
    match &report.failure {
        None => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Some(failure) => {
            println!("FAIL invariant={}: {}", failure.invariant, failure.details);
            println!("scenario: {}", scenario.description().trim());
            println!("last events:");
            for line in &report.trace_tail {
                println!("  {line}");
            }
            println!("replay: {}", replay_command(path, report.seed));
            ExitCode::from(1)
        }
    }
}

/// Run one seed in a child process of this same binary; returns its exit success and output.
fn run_child(path: &Path, seed: u64, extra: &[&str]) -> (bool, String) {
    let exe = std::env::current_exe().expect("the running binary has a path");
    let output = Command::new(exe).arg(path).arg("--seed").arg(seed.to_string()).args(extra).output();
    match output {
        Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) => (false, format!("could not start a child process: {e}")),
    }
}

fn run_range(path: &Path, first: u64, last: u64, jobs: usize) -> ExitCode {
    let seeds: Vec<u64> = (first..=last).collect();
    let mut failing = Vec::new();
    for chunk in seeds.chunks(jobs) {
        let results: Vec<(u64, bool, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                chunk.iter().map(|&seed| (seed, scope.spawn(move || run_child(path, seed, &[])))).collect();
            handles
                .into_iter()
                .map(|(seed, h)| {
                    let (ok, out) = h.join().expect("child runner thread");
                    (seed, ok, out)
                })
                .collect()
        });
        for (seed, ok, out) in results {
            let digest = out.lines().find_map(|l| l.strip_prefix("trace=")).unwrap_or("?");
            let stats = out.lines().find_map(|l| l.strip_prefix("stats ")).unwrap_or("");
            if ok {
                println!("seed={seed} PASS trace={digest} {stats}");
            } else {
                let why = out.lines().find(|l| l.starts_with("FAIL")).unwrap_or("FAIL (no report)");
                println!("seed={seed} {why}");
                failing.push(seed);
            }
        }
    }
    if failing.is_empty() {
        println!("all {} seeds passed", seeds.len());
        return ExitCode::SUCCESS;
    }
    println!("failing seeds: {failing:?}");
    for seed in failing {
        println!("  {}", replay_command(path, seed));
    }
    ExitCode::from(1)
}

fn check_determinism(path: &Path, seed: u64) -> ExitCode {
    let (_, first) = run_child(path, seed, &["--trace"]);
    let (_, second) = run_child(path, seed, &["--trace"]);
    let digest = |out: &str| out.lines().find_map(|l| l.strip_prefix("trace=")).map(str::to_owned);
    let (a, b) = (digest(&first), digest(&second));
    println!("seed={seed} first trace={a:?} second trace={b:?}");
    if a.is_some() && a == b {
        println!("PASS deterministic");
        return ExitCode::SUCCESS;
    }
    let events = |out: &str| out.lines().filter(|l| l.starts_with("event ")).map(str::to_owned).collect::<Vec<_>>();
    let (ea, eb) = (events(&first), events(&second));
    if let Some(i) = (0..ea.len().max(eb.len())).find(|&i| ea.get(i) != eb.get(i)) {
        println!("first difference at event {i}:\n  run 1: {:?}\n  run 2: {:?}", ea.get(i), eb.get(i));
    }
    println!("FAIL invariant=determinism: the same seed gave two different traces");
    ExitCode::from(1)
}

/// Logs only when asked (`CAIRN_SIM_LOG=<level>[,<target prefix>...]`, e.g. `info,openraft,cairn`),
/// so run output stays the report. The subscriber is our own minimal one: `tracing-subscriber`'s
/// keeps hash maps, and every new `HashMap` draws from the simulator's seeded randomness, so
/// turning its logging on would change the run being debugged.
fn init_logging() {
    if let Ok(spec) = std::env::var("CAIRN_SIM_LOG") {
        let mut parts = spec.split(',');
        let level = parts.next().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
        let targets = parts.map(str::to_owned).collect();
        let _ = tracing::subscriber::set_global_default(SimLog { level, targets });
    }
}

struct SimLog {
    level: tracing::Level,
    targets: Vec<String>,
}

impl tracing::Subscriber for SimLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event()
            && *metadata.level() <= self.level
            && (self.targets.is_empty() || self.targets.iter().any(|t| metadata.target().starts_with(t.as_str())))
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = write!(self.0, " {}={:?}", field.name(), value);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let now = madsim::time::Instant::now();
        eprintln!("{now:?} {} {}{}", event.metadata().level(), event.metadata().target(), fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
