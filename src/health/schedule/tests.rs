use proptest::prelude::*;

use super::*;
use crate::config::CheckStatus::{Critical, Passing, Warning};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn tcp_spec(interval: Duration) -> CheckSpec {
    let probe = Probe::Tcp { address: "127.0.0.1:1".into(), timeout: secs(1) };
    CheckSpec {
        timer: SpecTimer::Interval { probe, interval },
        initial_status: Critical,
        success_before_passing: 0,
        failures_before_critical: 0,
    }
}

fn ttl_spec(ttl: Duration) -> CheckSpec {
    CheckSpec {
        timer: SpecTimer::Ttl { ttl },
        initial_status: Critical,
        success_before_passing: 0,
        failures_before_critical: 0,
    }
}

fn upsert(id: &str, spec: CheckSpec) -> Input {
    Input::Upsert { check_id: id.into(), spec }
}

fn starts(actions: &[Action]) -> Vec<RunId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartProbe { run, .. } => Some(run.clone()),
            Action::Update(_) => None,
        })
        .collect()
}

fn updates(actions: &[Action]) -> Vec<(String, CheckStatus, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Update(u) => Some((u.check_id.clone(), u.status, u.output.clone())),
            Action::StartProbe { .. } => None,
        })
        .collect()
}

fn done(run: &RunId, status: CheckStatus, output: &str) -> Input {
    Input::ProbeDone { run: run.clone(), result: ProbeResult::new(status, output) }
}

/// Steps to `schedule.next_deadline()` and returns the one probe started there.
fn run_next(schedule: &mut Schedule) -> (Duration, RunId) {
    let at = schedule.next_deadline().expect("a deadline");
    let started = starts(&schedule.step(Input::Tick, at));
    assert_eq!(started.len(), 1, "{started:?}");
    (at, started[0].clone())
}

/// A check first runs somewhere in its first interval, then one interval after each run ends.
#[test]
fn first_run_is_staggered_then_interval_after_completion() {
    let mut schedule = Schedule::new(4, 7);
    assert!(schedule.step(upsert("web", tcp_spec(secs(10))), secs(100)).is_empty());
    let first = schedule.next_deadline().unwrap();
    assert!(first >= secs(100) && first < secs(110), "{first:?}");
    assert!(starts(&schedule.step(Input::Tick, first - Duration::from_nanos(1))).is_empty());
    let (_, run) = run_next(&mut schedule);
    assert_eq!(schedule.next_deadline(), None, "no deadline while running");
    let finished = first + secs(3);
    schedule.step(done(&run, Passing, "ok"), finished);
    assert_eq!(schedule.next_deadline(), Some(finished + secs(10)));
}

/// Different seeds spread checks differently; the same seed spreads them the same way.
#[test]
fn stagger_is_seeded() {
    let offsets = |seed| {
        let mut schedule = Schedule::new(1, seed);
        (0..5)
            .map(|i| {
                let id = format!("c{i}");
                schedule.step(upsert(&id, tcp_spec(secs(60))), Duration::ZERO);
                schedule.checks[&id].timer_due()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(1), offsets(1));
    assert_ne!(offsets(1), offsets(2));
}

impl Entry {
    fn timer_due(&self) -> Option<Duration> {
        match self.timer {
            Timer::Interval { run: RunState::Idle { next_due }, .. } => Some(next_due),
            _ => None,
        }
    }
}

/// Only changes are reported: a result equal to the current status and output says nothing.
#[test]
fn updates_only_on_change() {
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("web", tcp_spec(secs(10))), Duration::ZERO);
    let (at, run) = run_next(&mut schedule);
    let actions = schedule.step(done(&run, Passing, "ok"), at);
    assert_eq!(updates(&actions), [("web".into(), Passing, "ok".into())]);
    let (at, run) = run_next(&mut schedule);
    assert!(updates(&schedule.step(done(&run, Passing, "ok"), at)).is_empty());
    let (at, run) = run_next(&mut schedule);
    let actions = schedule.step(done(&run, Passing, "ok again"), at);
    assert_eq!(updates(&actions), [("web".into(), Passing, "ok again".into())], "output changes are reported");
}

/// Consul's thresholds: the first result applies at once; later the status moves only after
/// the required consecutive results, warning counts as a success, and results that do not move
/// it leave the output alone too.
#[test]
fn thresholds_as_consul_status_handler() {
    let mut spec = tcp_spec(secs(10));
    spec.success_before_passing = 2;
    spec.failures_before_critical = 3;
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("web", spec), Duration::ZERO);
    let mut seen = Vec::new();
    for (status, output) in [
        (Passing, "p1"),  // first result: applies at once
        (Critical, "c1"), // 1 of 3
        (Critical, "c2"), // 2 of 3
        (Passing, "p2"),  // resets failures; 1 of 2 successes
        (Critical, "c3"),
        (Critical, "c4"),
        (Critical, "c5"), // 3 of 3: critical
        (Warning, "w1"),  // 1 of 2
        (Warning, "w2"),  // 2 of 2: warning counts as success
    ] {
        let (at, run) = run_next(&mut schedule);
        for (_, status, output) in updates(&schedule.step(done(&run, status, output), at)) {
            seen.push((status, output));
        }
    }
    let expected = [(Passing, "p1"), (Critical, "c5"), (Warning, "w2")];
    assert_eq!(seen, expected.map(|(s, o)| (s, o.to_owned())));
}

/// A TTL check expires to critical unless updated in time; an update restarts the timer and
/// its output is quoted in the expiry message.
#[test]
fn ttl_expires_and_updates_reset_it() {
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("app", ttl_spec(secs(30))), secs(0));
    assert_eq!(schedule.next_deadline(), Some(secs(30)));
    let update = Input::TtlUpdate { check_id: "app".into(), status: Passing, output: "fine".into() };
    assert_eq!(updates(&schedule.step(update, secs(20))), [("app".into(), Passing, "fine".into())]);
    assert!(updates(&schedule.step(Input::Tick, secs(49))).is_empty(), "the update restarted the timer");
    let expired = updates(&schedule.step(Input::Tick, secs(50)));
    let message = "TTL expired (last output before timeout follows): fine".to_owned();
    assert_eq!(expired, [("app".into(), Critical, message)]);
    assert_eq!(schedule.next_deadline(), None, "expired once, not again");
    assert!(updates(&schedule.step(Input::Tick, secs(500))).is_empty());
}

/// A TTL check never updated expires with plain "TTL expired", even if it started passing.
#[test]
fn ttl_never_updated() {
    let mut schedule = Schedule::new(1, 1);
    let mut spec = ttl_spec(secs(5));
    spec.initial_status = Passing;
    schedule.step(upsert("app", spec), secs(0));
    assert_eq!(updates(&schedule.step(Input::Tick, secs(5))), [("app".into(), Critical, "TTL expired".into())]);
}

/// TTL output is cut to 4 KiB as Consul cuts it, on a character boundary.
#[test]
fn ttl_output_truncated() {
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("app", ttl_spec(secs(5))), secs(0));
    let long = format!("{}é", "a".repeat(OUTPUT_LEN_MAX - 1)); // 'é' straddles the limit
    let update = Input::TtlUpdate { check_id: "app".into(), status: Warning, output: long };
    let out = updates(&schedule.step(update, secs(1)));
    let expected = format!("{} ... (captured 4095 of 4097 bytes)", "a".repeat(OUTPUT_LEN_MAX - 1));
    assert_eq!(out, [("app".into(), Warning, expected)]);
}

/// TTL updates for unknown or non-TTL checks do nothing.
#[test]
fn ttl_update_ignored_for_others() {
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("web", tcp_spec(secs(10))), secs(0));
    for id in ["web", "nope"] {
        let update = Input::TtlUpdate { check_id: id.into(), status: Passing, output: String::new() };
        assert!(updates(&schedule.step(update, secs(1))).is_empty());
    }
    assert_eq!(schedule.status("web"), Some((Critical, "")));
}

/// With one slot, checks due together run one after another, in the order they came due, and
/// the number waiting is reported.
#[test]
fn concurrency_cap_queues_due_checks() {
    let mut schedule = Schedule::new(1, 3);
    for id in ["a", "b", "c"] {
        schedule.step(upsert(id, tcp_spec(secs(10))), secs(0));
    }
    let mut order: Vec<(Duration, &str)> =
        ["a", "b", "c"].into_iter().map(|id| (schedule.checks[id].timer_due().unwrap(), id)).collect();
    order.sort();
    let started = starts(&schedule.step(Input::Tick, secs(10)));
    assert_eq!(started.len(), 1);
    assert_eq!((schedule.running(), schedule.waiting()), (1, 2));
    let mut ran = vec![started[0].check_id.clone()];
    let mut run = started[0].clone();
    for _ in 0..2 {
        let next = starts(&schedule.step(done(&run, Passing, ""), secs(11)));
        assert_eq!(next.len(), 1);
        run = next[0].clone();
        ran.push(run.check_id.clone());
    }
    assert_eq!(ran, order.iter().map(|(_, id)| id.to_string()).collect::<Vec<_>>());
    assert_eq!(schedule.waiting(), 0);
}

/// A probe still running when its check is removed keeps its slot until it finishes, and its
/// result is dropped; the same holds when the check is replaced by a different spec.
#[test]
fn stale_results_are_dropped() {
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("a", tcp_spec(secs(10))), secs(0));
    schedule.step(upsert("b", tcp_spec(secs(10))), secs(0));
    let started = starts(&schedule.step(Input::Tick, secs(10)));
    let first = started[0].clone();
    schedule.step(Input::Remove { check_id: first.check_id.clone() }, secs(10));
    assert_eq!(schedule.running(), 1, "the removed check's probe still holds the slot");
    let actions = schedule.step(done(&first, Passing, "late"), secs(11));
    assert!(updates(&actions).is_empty());
    let second = starts(&actions);
    assert_eq!(second.len(), 1, "the slot went to the other check");
    schedule.step(upsert(&second[0].check_id, tcp_spec(secs(20))), secs(11));
    assert!(updates(&schedule.step(done(&second[0], Passing, "late"), secs(12))).is_empty());
    assert_eq!(schedule.running(), 0);
}

/// Re-adding an identical check (a reload that changed nothing) keeps its schedule; a changed
/// one is rescheduled but keeps its status and output.
#[test]
fn upsert_same_spec_is_a_no_op() {
    let mut schedule = Schedule::new(1, 1);
    schedule.step(upsert("web", tcp_spec(secs(10))), secs(0));
    let (at, run) = run_next(&mut schedule);
    schedule.step(done(&run, Passing, "ok"), at);
    let due = schedule.next_deadline();
    schedule.step(upsert("web", tcp_spec(secs(10))), at + secs(1));
    assert_eq!(schedule.next_deadline(), due);
    schedule.step(upsert("web", tcp_spec(secs(60))), at + secs(1));
    assert_ne!(schedule.next_deadline(), due);
    assert_eq!(schedule.status("web"), Some((Passing, "ok")));
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(u8, u64),
    Remove(u8),
    Finish(usize, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 1u64..30).prop_map(|(id, interval)| Op::Upsert(id, interval)),
        (0u8..6).prop_map(Op::Remove),
        (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Finish(i, ok)),
        (0u64..40).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever happens, no more than the cap run at once, the queue holds exactly the queued
    /// checks, each once, checks wait only while every slot is taken, and nothing due is left
    /// behind the next deadline.
    #[test]
    fn cap_and_queue_invariants(cap in 1usize..4, seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        let mut schedule = Schedule::new(cap, seed);
        let mut now = Duration::ZERO;
        let mut running: Vec<RunId> = Vec::new();
        for op in ops {
            let input = match op {
                Op::Upsert(id, interval) => upsert(&format!("c{id}"), tcp_spec(secs(interval))),
                Op::Remove(id) => Input::Remove { check_id: format!("c{id}") },
                Op::Finish(i, ok) if !running.is_empty() => {
                    let run = running.remove(i % running.len());
                    done(&run, if ok { Passing } else { Critical }, "")
                }
                Op::Finish(..) => Input::Tick,
                Op::Advance(s) => { now += secs(s); Input::Tick }
            };
            running.extend(starts(&schedule.step(input, now)));
            prop_assert!(schedule.running() <= cap);
            prop_assert_eq!(schedule.running(), running.len());
            let queued: Vec<&String> = schedule.checks.iter()
                .filter(|(_, e)| matches!(e.timer, Timer::Interval { run: RunState::Queued, .. }))
                .map(|(id, _)| id).collect();
            let mut in_queue: Vec<&String> = schedule.queue.iter().collect();
            in_queue.sort();
            prop_assert_eq!(queued, in_queue);
            if schedule.waiting() > 0 {
                prop_assert_eq!(schedule.running(), cap, "checks wait only while every slot is taken");
            }
            if let Some(deadline) = schedule.next_deadline() {
                prop_assert!(deadline > now, "everything due was queued or started");
            }
        }
    }

    /// The status follows Consul's thresholds: a change of class (success or failure) happens
    /// only when every result so far, or the last `threshold` results, were of that class; and
    /// whenever the last `threshold` results agree, the status agrees with the last one.
    #[test]
    fn thresholds_need_consecutive_results(
        success_before_passing in 0u32..4,
        failures_before_critical in 0u32..4,
        results in proptest::collection::vec(prop_oneof![Just(Passing), Just(Warning), Just(Critical)], 1..40),
    ) {
        let mut spec = tcp_spec(secs(1));
        spec.success_before_passing = success_before_passing;
        spec.failures_before_critical = failures_before_critical;
        let mut schedule = Schedule::new(1, 0);
        schedule.step(upsert("c", spec), Duration::ZERO);
        let failure = |s: CheckStatus| s == Critical;
        let mut shown = Critical;
        for (i, &result) in results.iter().enumerate() {
            let (at, run) = run_next(&mut schedule);
            schedule.step(done(&run, result, &format!("r{i}")), at);
            let (now_shown, output) = schedule.status("c").unwrap();
            let threshold = if failure(result) { failures_before_critical } else { success_before_passing };
            let tail = (threshold as usize).max(1).min(i + 1);
            let tail_agrees = results[i + 1 - tail..=i].iter().all(|&r| failure(r) == failure(result));
            let all_agree = results[..=i].iter().all(|&r| failure(r) == failure(result));
            if failure(now_shown) != failure(shown) {
                prop_assert!(all_agree || (tail_agrees && tail >= threshold as usize), "changed at {i}");
            }
            if tail_agrees && tail >= threshold as usize || all_agree {
                let expected = format!("r{i}");
                prop_assert_eq!((now_shown, output), (result, expected.as_str()));
            }
            shown = now_shown;
        }
    }

    /// A check's first run falls inside its first interval.
    #[test]
    fn first_run_within_interval(seed in any::<u64>(), interval in 1u64..100_000, start in 0u64..1000) {
        let mut schedule = Schedule::new(1, seed);
        schedule.step(upsert("c", tcp_spec(Duration::from_millis(interval))), secs(start));
        let due = schedule.next_deadline().unwrap();
        prop_assert!(due >= secs(start) && due < secs(start) + Duration::from_millis(interval));
    }
}
