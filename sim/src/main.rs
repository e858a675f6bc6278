//! `cairn-sim`: run a scenario with one seed, or with a range of seeds (each in its own process).
//! Usually started through `sim/run`, which builds it in the simulator configuration.

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cairn_sim::cli::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!("cairn-sim must be built with RUSTFLAGS=\"--cfg madsim\"; use sim/run");
    std::process::ExitCode::from(2)
}
