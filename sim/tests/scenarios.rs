//! The simulation suite: every scenario in `scenarios/` over its seeds (`1..=seeds`) and its
//! regression seeds, one test per (scenario, seed), plus one determinism test per scenario (seed 1
//! run twice in separate processes must give the same event trace). Run it with cargo-nextest so
//! each seed gets its own process (see `.ci/run`); the simulator build is `RUSTFLAGS="--cfg madsim"`.

#[cfg(madsim)]
fn main() {
    use std::path::{Path, PathBuf};

    use cairn_sim::scenario::AnyScenario;
    use libtest_mimic::{Arguments, Failed, Trial};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/ is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut trials = Vec::new();
    for path in paths {
        let scenario = AnyScenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let determinism_path = path.clone();
        trials.push(Trial::test(format!("{}::determinism", scenario.name()), move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-sim"))
                .arg(&determinism_path)
                .args(["--seed", "1", "--check-determinism"])
                .output()
                .map_err(|e| Failed::from(format!("cannot run cairn-sim: {e}")))?;
            let report = String::from_utf8_lossy(&output.stdout).into_owned();
            if output.status.success() {
                Ok(())
            } else {
                Err(Failed::from(report))
            }
        }));
        for seed in scenario.suite_seeds() {
            let (scenario, shown) = (scenario.clone(), Path::new("scenarios").join(path.file_name().expect("name")));
            trials.push(Trial::test(format!("{}::seed_{seed:03}", scenario.name()), move || {
                let report = cairn_sim::cli::run_scenario(&scenario, seed);
                match report.failure {
                    None => Ok(()),
                    Some(failure) => Err(Failed::from(format!(
                        "FAIL invariant={}: {}\nlast events:\n  {}\nreplay: {}",
                        failure.invariant,
                        failure.details,
                        report.trace_tail.join("\n  "),
                        cairn_sim::cli::replay_command(&shown, seed)
                    ))),
                }
            }));
        }
    }
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

/// Without the simulator configuration there is nothing to run; the suite is empty.
#[cfg(not(madsim))]
fn main() {
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), Vec::new()).exit();
}
