//! Scripted check outcomes (`[[check_flap]]`): when each agent's checks fail and pass, driven
//! through the agents' scripted probers, and what the catalog must therefore show.
//!
//! A check turns critical only after `failures_before_critical` failed probes in a row, and
//! passing only after `success_before_passing` successes, so an outage shorter than its threshold
//! must not show at all. For each stretch of one outcome the expectation is decided from its
//! length: long enough for the threshold's probes whatever the probe phase (flip), too short for
//! them whatever the phase (no flip), or in between, which a scenario may not ask for because the
//! answer would depend on when the probes happen to run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn::config::CheckStatus;
use cairn::health::ScriptedProber;
use tokio::time::Instant;

use crate::check::catalog::AgentEvent;
use crate::scenario::{AgentCheck, CheckFlap, FlapStatus};

/// Slack for a probe's own run time at stretch edges.
const EDGE_MS: u64 = 100;

/// When each agent's scripted outcome changes: (ms since the start, passing), in time order.
pub fn set_points(flaps: &[CheckFlap]) -> BTreeMap<usize, Vec<(u64, bool)>> {
    let mut points: BTreeMap<usize, Vec<(u64, bool)>> = BTreeMap::new();
    for flap in flaps {
        let passing = flap.status == FlapStatus::Passing;
        for k in 0..=flap.repeat {
            let from = ((flap.at_s + flap.every_s * k as f64) * 1000.0) as u64;
            let to = from + (flap.for_s * 1000.0) as u64;
            let agent = points.entry(flap.agent as usize).or_default();
            agent.push((from, passing));
            agent.push((to, !passing));
        }
    }
    for agent in points.values_mut() {
        agent.sort_by_key(|(at, _)| *at);
    }
    points
}

/// The visibility changes the catalog must show for `points`: one event where a stretch of the
/// other outcome is long enough to pass its threshold, at the start of that stretch. A stretch
/// whose effect depends on probe timing is an error naming it.
pub fn expected_events(
    points: &BTreeMap<usize, Vec<(u64, bool)>>,
    check: &AgentCheck,
    end_ms: u64,
) -> Result<Vec<AgentEvent>, String> {
    let interval_ms = (check.interval_s * 1000.0) as u64;
    let (to_critical, to_passing) = check.thresholds();
    let mut events = Vec::new();
    for (&agent, points) in points {
        // Merge set-points into stretches of one outcome.
        let mut stretches: Vec<(u64, bool)> = Vec::new();
        for &(at, passing) in points {
            match stretches.last_mut() {
                Some((start, outcome)) if *start == at => *outcome = passing,
                Some((_, outcome)) if *outcome == passing => {}
                _ => stretches.push((at, passing)),
            }
        }
        let mut shown_passing = true;
        let ends = stretches.iter().skip(1).map(|(at, _)| *at).chain(std::iter::once(end_ms)).collect::<Vec<_>>();
        for (&(from, passing), &to) in stretches.iter().zip(&ends) {
            if passing == shown_passing {
                continue;
            }
            let needed = u64::from(if passing { to_passing } else { to_critical });
            let length = to - from;
            if length >= needed * interval_ms + EDGE_MS {
                shown_passing = passing;
                events.push(AgentEvent { at_ms: from, agent, up: passing });
            } else if length + EDGE_MS > needed.saturating_sub(1) * interval_ms {
                return Err(format!(
                    "agent-{agent}'s {} stretch at {from} ms lasts {length} ms: whether {needed} probes every \
                     {interval_ms} ms fall in it depends on probe timing; make it shorter than {} ms or at least {} ms",
                    if passing { "passing" } else { "critical" },
                    needed.saturating_sub(1) * interval_ms,
                    needed * interval_ms + EDGE_MS,
                ));
            }
        }
    }
    events.sort_by_key(|e| (e.at_ms, e.agent));
    Ok(events)
}

/// An agent's instances are visible when the agent runs and its checks pass: combine the two
/// event streams into one.
pub fn combine(crashes: &[AgentEvent], checks: &[AgentEvent]) -> Vec<AgentEvent> {
    let mut all: Vec<(AgentEvent, bool)> =
        crashes.iter().map(|e| (*e, true)).chain(checks.iter().map(|e| (*e, false))).collect();
    all.sort_by_key(|(e, _)| (e.at_ms, e.agent));
    let mut state: BTreeMap<usize, (bool, bool)> = BTreeMap::new();
    let mut out = Vec::new();
    for (event, is_crash) in all {
        let (up, passing) = state.entry(event.agent).or_insert((true, true));
        let before = *up && *passing;
        if is_crash {
            *up = event.up;
        } else {
            *passing = event.up;
        }
        let after = *up && *passing;
        if before != after {
            out.push(AgentEvent { at_ms: event.at_ms, agent: event.agent, up: after });
        }
    }
    out
}

/// Drive the agents' probers through `points`: at each set-point, every check of the agent
/// (`service:<name>` for each of `services`) answers as scripted.
pub async fn run(
    probers: Vec<Arc<ScriptedProber>>,
    services: Vec<String>,
    points: BTreeMap<usize, Vec<(u64, bool)>>,
    start: Instant,
) {
    let mut schedule: Vec<(u64, usize, bool)> = points
        .iter()
        .flat_map(|(&agent, points)| points.iter().map(move |&(at, passing)| (at, agent, passing)))
        .collect();
    schedule.sort();
    for (at, agent, passing) in schedule {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        let (status, output) = match passing {
            true => (CheckStatus::Passing, "HTTP GET http://127.0.0.1:8080/health: 200 OK Output: ok"),
            false => (CheckStatus::Critical, "HTTP GET http://127.0.0.1:8080/health: 503 Service Unavailable"),
        };
        for service in &services {
            probers[agent].set(&format!("service:{service}"), status, output);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(interval_s: f64, failures: u32, successes: u32) -> AgentCheck {
        AgentCheck { interval_s, failures_before_critical: failures, success_before_passing: successes }
    }

    fn flap(at_s: f64, status: FlapStatus, for_s: f64, repeat: u32, every_s: f64) -> CheckFlap {
        CheckFlap { at_s, agent: 0, status, for_s, repeat, every_s }
    }

    #[test]
    fn a_long_outage_flips_both_ways_and_a_short_blip_does_not() {
        let flaps = [flap(10.0, FlapStatus::Critical, 8.0, 0, 0.0), flap(30.0, FlapStatus::Critical, 0.5, 0, 0.0)];
        let events = expected_events(&set_points(&flaps), &check(1.0, 2, 2), 60_000).unwrap();
        assert_eq!(
            events,
            [AgentEvent { at_ms: 10_000, agent: 0, up: false }, AgentEvent { at_ms: 18_000, agent: 0, up: true }]
        );
    }

    #[test]
    fn a_flapping_check_with_short_passing_blips_stays_down() {
        // Critical for 3 s, then 0.5 s of passing, five times: success_before_passing = 2 never
        // sees two successes in a row until the end.
        let flaps = [flap(10.0, FlapStatus::Critical, 3.0, 4, 3.5)];
        let events = expected_events(&set_points(&flaps), &check(1.0, 2, 2), 60_000).unwrap();
        assert_eq!(
            events,
            [AgentEvent { at_ms: 10_000, agent: 0, up: false }, AgentEvent { at_ms: 27_000, agent: 0, up: true }]
        );
    }

    #[test]
    fn a_stretch_that_depends_on_probe_timing_is_refused() {
        let flaps = [flap(10.0, FlapStatus::Critical, 1.5, 0, 0.0)];
        let error = expected_events(&set_points(&flaps), &check(1.0, 2, 2), 60_000).unwrap_err();
        assert!(error.contains("depends on probe timing"), "{error}");
    }

    #[test]
    fn visibility_needs_the_agent_up_and_its_check_passing() {
        let crashes = [AgentEvent { at_ms: 5, agent: 0, up: false }, AgentEvent { at_ms: 20, agent: 0, up: true }];
        let checks = [AgentEvent { at_ms: 10, agent: 0, up: false }, AgentEvent { at_ms: 30, agent: 0, up: true }];
        let combined = combine(&crashes, &checks);
        assert_eq!(
            combined,
            [AgentEvent { at_ms: 5, agent: 0, up: false }, AgentEvent { at_ms: 30, agent: 0, up: true }]
        );
    }
}
