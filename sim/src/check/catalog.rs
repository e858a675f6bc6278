//! The catalog follows the agents: a service instance is in `?passing` answers while its agent
//! is up, and out of them while it is down.
//!
//! The run records when each agent went down (crashed, cut off) and came back, and samples, every
//! few hundred simulated milliseconds, whether every server shows all of the agent's instances
//! passing ("visible") or none of them ("hidden"). For every stretch between two events that
//! lasts at least the bound, every sample from the bound on must show the expected state: hidden
//! while down (failure noticed and spread within the bound, and never undone while the agent is
//! still down), visible while up (back within the bound, and never dropped while it runs: a live
//! agent's services flapping out of answers is a false failure). Stretches shorter than the
//! bound are not judged: failure detection is allowed to miss an outage shorter than itself.

use std::collections::BTreeMap;

/// An agent going down or coming back, at a simulated time (ms since the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentEvent {
    pub at_ms: u64,
    pub agent: usize,
    pub up: bool,
}

/// What every server's `?passing` answers showed of one agent, asked between `at_ms` and
/// `until_ms` (the answers arrive over a while; a sample speaks for that whole span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub until_ms: u64,
    pub agent: usize,
    /// Every server answered all of the agent's instances as passing.
    pub visible: bool,
    /// No server answered any of them.
    pub hidden: bool,
}

/// Judge `samples` against `events` (each agent starts up at `start_ms`, when its services were
/// registered). `end_ms` closes the last stretch.
pub fn check_catalog_follows_agents(
    agents: usize,
    events: &[AgentEvent],
    samples: &[Sample],
    start_ms: u64,
    end_ms: u64,
    bound_ms: u64,
) -> Result<(), String> {
    let mut stretches: BTreeMap<usize, Vec<(u64, bool)>> = (0..agents).map(|a| (a, vec![(start_ms, true)])).collect();
    for event in events.iter().filter(|e| e.agent < agents) {
        let stretch = stretches.get_mut(&event.agent).expect("every agent has a stretch");
        // A repeated event (restarting an agent that is up) changes nothing.
        if stretch.last().is_some_and(|(_, up)| *up != event.up) {
            stretch.push((event.at_ms.max(start_ms), event.up));
        }
    }
    for (agent, stretch) in &stretches {
        let ends = stretch.iter().skip(1).map(|(at, _)| *at).chain(std::iter::once(end_ms));
        for (&(from, up), to) in stretch.iter().zip(ends) {
            check_stretch(*agent, up, from, to, bound_ms, samples)?;
        }
    }
    Ok(())
}

/// For each event, how long until the samples first showed it (down: hidden everywhere; up:
/// visible everywhere), in ms up to the last answer of the first such sample; `None` where they never did before the next event. For reports.
pub fn reaction_times_ms(events: &[AgentEvent], samples: &[Sample]) -> Vec<(AgentEvent, Option<u64>)> {
    events
        .iter()
        .map(|event| {
            let next = events.iter().find(|e| e.agent == event.agent && e.at_ms > event.at_ms).map(|e| e.at_ms);
            let shown = samples
                .iter()
                .filter(|s| s.agent == event.agent && s.at_ms >= event.at_ms && next.is_none_or(|n| s.until_ms < n))
                .find(|s| if event.up { s.visible } else { s.hidden })
                .map(|s| s.until_ms - event.at_ms);
            (*event, shown)
        })
        .collect()
}

fn check_stretch(agent: usize, up: bool, from: u64, to: u64, bound_ms: u64, samples: &[Sample]) -> Result<(), String> {
    if to.saturating_sub(from) < bound_ms {
        return Ok(());
    }
    let judged: Vec<&Sample> =
        samples.iter().filter(|s| s.agent == agent && s.at_ms >= from + bound_ms && s.until_ms < to).collect();
    let state = if up { "up" } else { "down" };
    if judged.is_empty() && to > from + bound_ms {
        return Err(format!("a{agent} was {state} from {from} ms to {to} ms but nothing was sampled after the bound"));
    }
    let wrong = judged.iter().find(|s| if up { !s.visible } else { !s.hidden });
    match wrong {
        None => Ok(()),
        Some(sample) if up => Err(format!(
            "a{agent} has been up since {from} ms, yet at {} ms ({} ms later, bound {bound_ms} ms) not every server \
             answered its instances as passing",
            sample.at_ms,
            sample.at_ms - from
        )),
        Some(sample) => Err(format!(
            "a{agent} has been down since {from} ms, yet at {} ms ({} ms later, bound {bound_ms} ms) a server still \
             answered one of its instances as passing",
            sample.at_ms,
            sample.at_ms - from
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(agent: usize, from: u64, to: u64, state: impl Fn(u64) -> (bool, bool)) -> Vec<Sample> {
        (from..to)
            .step_by(100)
            .map(|at_ms| {
                let (visible, hidden) = state(at_ms);
                Sample { at_ms, until_ms: at_ms + 20, agent, visible, hidden }
            })
            .collect()
    }

    fn down(at_ms: u64) -> AgentEvent {
        AgentEvent { at_ms, agent: 0, up: false }
    }

    fn up(at_ms: u64) -> AgentEvent {
        AgentEvent { at_ms, agent: 0, up: true }
    }

    /// Hidden 5 s after a crash at 10 s, visible 2 s after the restart at 30 s: within a 6 s bound.
    #[test]
    fn failure_and_recovery_within_the_bound_pass() {
        let observed = samples(0, 0, 50_000, |t| {
            let hidden = (15_000..32_000).contains(&t);
            (!hidden, hidden)
        });
        assert!(check_catalog_follows_agents(1, &[down(10_000), up(30_000)], &observed, 0, 50_000, 6_000).is_ok());
    }

    /// Still passing 8 s after the crash breaks a 6 s bound, and the message says when.
    #[test]
    fn a_late_failure_verdict_fails() {
        let observed = samples(0, 0, 50_000, |t| {
            let hidden = (18_000..32_000).contains(&t);
            (!hidden, hidden)
        });
        let err =
            check_catalog_follows_agents(1, &[down(10_000), up(30_000)], &observed, 0, 50_000, 6_000).unwrap_err();
        assert!(err.contains("down since 10000 ms") && err.contains("at 16000 ms"), "{err}");
    }

    /// An agent that stays up but drops out of the answers for a moment is a false failure.
    #[test]
    fn a_live_agent_dropping_out_fails() {
        let observed = samples(0, 0, 50_000, |t| {
            let hidden = (20_000..21_000).contains(&t);
            (!hidden, hidden)
        });
        let err = check_catalog_follows_agents(1, &[], &observed, 0, 50_000, 6_000).unwrap_err();
        assert!(err.contains("up since 0 ms") && err.contains("at 20000 ms"), "{err}");
    }

    /// An outage shorter than the bound is not judged either way.
    #[test]
    fn a_short_outage_is_not_judged() {
        let observed = samples(0, 0, 50_000, |_| (true, false));
        assert!(check_catalog_follows_agents(1, &[down(10_000), up(13_000)], &observed, 0, 50_000, 6_000).is_ok());
    }

    /// Reaction times are measured from each event to the first sample showing it.
    #[test]
    fn reaction_times_are_measured_per_event() {
        let observed = samples(0, 0, 50_000, |t| {
            let hidden = (15_000..32_000).contains(&t);
            (!hidden, hidden)
        });
        let times: Vec<Option<u64>> =
            reaction_times_ms(&[down(10_000), up(30_000)], &observed).into_iter().map(|(_, ms)| ms).collect();
        assert_eq!(times, [Some(5_020), Some(2_020)]);
    }

    /// A sample whose answers were still arriving when the agent came back speaks for neither
    /// stretch: it is not judged.
    #[test]
    fn a_sample_spanning_an_event_is_not_judged() {
        let mut observed = samples(0, 0, 50_000, |t| {
            let hidden = (15_000..30_000).contains(&t);
            (!hidden, hidden)
        });
        // Asked at 29.9 s, while down; the last answer came after the restart at 30 s.
        observed.push(Sample { at_ms: 29_900, until_ms: 30_100, agent: 0, visible: true, hidden: false });
        assert!(check_catalog_follows_agents(1, &[down(10_000), up(30_000)], &observed, 0, 50_000, 6_000).is_ok());
    }

    /// A stretch long enough to judge with no samples in it is an error, not a pass.
    #[test]
    fn missing_samples_fail() {
        let err = check_catalog_follows_agents(1, &[], &[], 0, 50_000, 6_000).unwrap_err();
        assert!(err.contains("nothing was sampled"), "{err}");
    }
}
