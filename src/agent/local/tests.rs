use std::time::Duration;

use serde_json::json;

use super::*;
use crate::state::catalog::Catalog;
use crate::state::{Outcome, State};

fn node() -> NodeInfo {
    NodeInfo { name: "web-1".into(), id: "7b2f0d2e-0000-4000-8000-000000000001".into(), address: "10.0.0.5".into() }
}

fn service(body: serde_json::Value) -> config::ServiceDefinition {
    config::service_from_api(&body).expect("a valid service").0
}

fn check(body: serde_json::Value) -> config::CheckDefinition {
    config::check_from_api(&body).expect("a valid check").0
}

fn web() -> config::ServiceDefinition {
    service(json!({"Name": "web", "Port": 80, "Check": {"TTL": "30s"}}))
}

/// Carry out every owed write against `state` (a stand-in for the catalog) as anti-entropy would.
fn sync(local: &mut LocalState, state: &mut State, now: Instant) -> usize {
    let ops = local.pending(now);
    for op in &ops {
        let (command, covers) = local.command(op).expect("an owed op has a command");
        let index = state.last_index() + 1;
        assert_eq!(state.apply(index, &command), Outcome::Done, "{op:?}");
        local.synced(&covers);
    }
    ops.len()
}

fn remote(catalog: &Catalog) -> NodeEntries {
    catalog.node_entries("web-1")
}

#[test]
fn a_service_is_registered_with_its_checks_in_one_write() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Api, now).unwrap();
    assert_eq!(local.pending(now), vec![SyncOp::RegisterService { id: "web".into() }]);
    let mut state = State::default();
    assert_eq!(sync(&mut local, &mut state, now), 1);
    let catalog = state.catalog();
    assert_eq!(catalog.service("web-1", "web").unwrap().port, 80);
    let check = catalog.check("web-1", "service:web").unwrap();
    assert_eq!(check.status, CheckStatus::Critical, "a check starts critical unless it says otherwise");
    assert!(local.in_sync(now));
}

#[test]
fn a_status_change_is_owed_at_once_and_output_alone_waits() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Api, now).unwrap();
    let mut state = State::default();
    sync(&mut local, &mut state, now);

    assert!(local.update_check("service:web", CheckStatus::Passing, "ok".into(), now).unwrap());
    assert_eq!(local.pending(now), vec![SyncOp::RegisterCheck { id: "service:web".into() }]);
    sync(&mut local, &mut state, now);
    assert_eq!(state.catalog().check("web-1", "service:web").unwrap().status, CheckStatus::Passing);

    assert!(local.update_check("service:web", CheckStatus::Passing, "still ok".into(), now).unwrap());
    assert!(local.pending(now).is_empty(), "new output alone is deferred");
    assert_eq!(local.next_output_due(), Some(now + CHECK_OUTPUT_SYNC_INTERVAL));
    let later = now + CHECK_OUTPUT_SYNC_INTERVAL;
    assert_eq!(local.pending(later), vec![SyncOp::RegisterCheck { id: "service:web".into() }]);
    sync(&mut local, &mut state, later);
    assert_eq!(state.catalog().check("web-1", "service:web").unwrap().output, "still ok");
    assert!(local.in_sync(later + CHECK_OUTPUT_SYNC_INTERVAL));
}

#[test]
fn a_change_during_a_write_is_not_marked_synced() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Api, now).unwrap();
    let (_, covers) = local.command(&SyncOp::RegisterService { id: "web".into() }).unwrap();
    local.update_check("service:web", CheckStatus::Passing, String::new(), now).unwrap();
    local.synced(&covers);
    assert_eq!(local.pending(now), vec![SyncOp::RegisterCheck { id: "service:web".into() }]);
}

#[test]
fn a_full_sync_removes_what_the_agent_no_longer_has_but_not_the_leaders_entries() {
    let now = Instant::now();
    let mut state = State::default();
    // Left over from an earlier life of this agent, plus the leader's own entries.
    let mut stale = LocalState::new(node());
    stale.add_service(service(json!({"Name": "old", "Port": 1})), Source::Api, now).unwrap();
    stale.add_check(check(json!({"Name": "disk", "TTL": "1m"})), Source::Api, now).unwrap();
    sync(&mut stale, &mut state, now);
    let serf = Registration {
        node: "web-1".into(),
        address: "10.0.0.5".into(),
        checks: vec![CheckRow {
            check_id: SERF_HEALTH_CHECK_ID.into(),
            status: CheckStatus::Passing,
            ..CheckRow::default()
        }],
        ..Registration::default()
    };
    state.apply(state.last_index() + 1, &Command::Catalog(CatalogCommand::Register(serf)));

    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Config, now).unwrap();
    local.compare_with(&remote(state.catalog()));
    sync(&mut local, &mut state, now);

    let catalog = state.catalog();
    let services: Vec<&str> = catalog.services_of_node("web-1").map(|s| s.id.as_str()).collect();
    assert_eq!(services, ["web"]);
    let checks: Vec<&str> = catalog.checks_of_node("web-1").map(|c| c.check_id.as_str()).collect();
    assert_eq!(checks, ["serfHealth", "service:web"]);
    local.compare_with(&remote(catalog));
    assert!(local.in_sync(now), "{:?}", local.pending(now));
}

#[test]
fn a_full_sync_repairs_drift() {
    let now = Instant::now();
    let mut state = State::default();
    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Config, now).unwrap();
    sync(&mut local, &mut state, now);
    // Someone deregisters the service behind the agent's back.
    let gone = Deregistration { node: "web-1".into(), service_id: Some("web".into()), check_id: None };
    state.apply(state.last_index() + 1, &Command::Catalog(CatalogCommand::Deregister(gone)));
    assert!(local.in_sync(now), "the agent cannot know without reading");
    local.compare_with(&remote(state.catalog()));
    assert_eq!(sync(&mut local, &mut state, now), 1);
    assert!(state.catalog().service("web-1", "web").is_some());
    assert!(state.catalog().check("web-1", "service:web").is_some());
}

#[test]
fn tag_override_adopts_the_catalogs_tags() {
    let now = Instant::now();
    let mut state = State::default();
    let mut local = LocalState::new(node());
    let def = service(json!({"Name": "db", "Tags": ["a"], "EnableTagOverride": true}));
    local.add_service(def, Source::Api, now).unwrap();
    sync(&mut local, &mut state, now);
    let mut row = service_row(&local.service("db").unwrap().definition);
    row.tags = vec!["primary".into()];
    let retag = Registration {
        node: "web-1".into(),
        address: "10.0.0.5".into(),
        service: Some(row),
        skip_node_update: true,
        ..Registration::default()
    };
    state.apply(state.last_index() + 1, &Command::Catalog(CatalogCommand::Register(retag)));
    local.compare_with(&remote(state.catalog()));
    assert!(local.in_sync(now));
    assert_eq!(local.service("db").unwrap().definition.tags, ["primary"]);
}

#[test]
fn removing_a_service_deregisters_it_with_its_checks_in_one_write() {
    let now = Instant::now();
    let mut state = State::default();
    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Api, now).unwrap();
    sync(&mut local, &mut state, now);
    assert_eq!(local.remove_service("web").unwrap(), ["service:web"]);
    assert_eq!(local.pending(now), vec![SyncOp::DeregisterService { id: "web".into() }]);
    sync(&mut local, &mut state, now);
    assert!(state.catalog().checks_of_node("web-1").next().is_none());
    assert!(local.in_sync(now));
    assert_eq!(local.remove_service("web"), Err(LocalError::UnknownService("web".into())));
}

#[test]
fn re_registering_a_service_drops_checks_it_no_longer_has() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    let two = service(json!({"Name": "web", "Checks": [{"TTL": "10s"}, {"TTL": "20s"}]}));
    local.add_service(two, Source::Api, now).unwrap();
    let one = service(json!({"Name": "web", "Checks": [{"ID": "service:web:1", "TTL": "10s"}]}));
    assert_eq!(local.add_service(one, Source::Api, now).unwrap(), ["service:web:2"]);
    let ids: Vec<&str> = local.checks().map(|(c, _)| c.id.as_str()).collect();
    assert_eq!(ids, ["service:web:1"]);
}

#[test]
fn an_unchanged_definition_stays_in_sync() {
    let now = Instant::now();
    let mut state = State::default();
    let mut local = LocalState::new(node());
    local.add_service(web(), Source::Config, now).unwrap();
    sync(&mut local, &mut state, now);
    local.update_check("service:web", CheckStatus::Passing, String::new(), now).unwrap();
    sync(&mut local, &mut state, now);
    // A reload reads the same file again.
    local.add_service(web(), Source::Config, now).unwrap();
    assert!(local.in_sync(now));
    assert_eq!(local.check("service:web").unwrap().status, CheckStatus::Passing, "the result is kept");
}

#[test]
fn checks_need_their_service_and_reserved_ids_are_refused() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    let orphan = check(json!({"Name": "c", "ServiceID": "nope", "TTL": "10s"}));
    assert_eq!(local.add_check(orphan, Source::Api, now), Err(LocalError::CheckOfUnknownService("nope".into())));
    let reserved = check(json!({"Name": "m", "ID": "_node_maintenance", "TTL": "10s"}));
    assert!(matches!(local.add_check(reserved, Source::Api, now), Err(LocalError::Reserved(_))));
    assert!(matches!(
        local.update_check("nope", CheckStatus::Passing, String::new(), now),
        Err(LocalError::UnknownCheck(_))
    ));
}

#[test]
fn maintenance_is_a_critical_check_with_the_reason() {
    let now = Instant::now();
    let mut state = State::default();
    let mut local = LocalState::new(node());
    local.add_service(service(json!({"Name": "web", "Port": 80})), Source::Api, now).unwrap();
    local.set_maintenance(Some("web"), true, "deploying").unwrap();
    sync(&mut local, &mut state, now);
    let check = state.catalog().check("web-1", "_service_maintenance:web").unwrap();
    assert_eq!((check.status, check.notes.as_str()), (CheckStatus::Critical, "deploying"));
    assert!(state.catalog().passing_instances("web").is_empty());
    local.set_maintenance(Some("web"), false, "").unwrap();
    sync(&mut local, &mut state, now);
    assert_eq!(state.catalog().passing_instances("web").len(), 1);
    local.set_maintenance(None, true, "").unwrap();
    assert!(local.check(NODE_MAINTENANCE_CHECK_ID).unwrap().notes.starts_with("Maintenance mode is enabled"));
    assert!(matches!(local.set_maintenance(Some("nope"), true, ""), Err(LocalError::UnknownService(_))));
}

#[test]
fn a_service_critical_too_long_is_named_for_deregistration() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    let def = service(json!({"Name": "web", "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "1m"}}));
    local.add_service(def, Source::Api, now).unwrap();
    assert!(local.critical_too_long(now + Duration::from_secs(59)).is_empty());
    assert_eq!(local.critical_too_long(now + Duration::from_secs(60)), ["web"]);
    local.update_check("service:web", CheckStatus::Passing, String::new(), now).unwrap();
    assert!(local.critical_too_long(now + Duration::from_secs(600)).is_empty());
}

#[test]
fn limits_hold() {
    let now = Instant::now();
    let mut local = LocalState::new(node());
    for n in 0..config::SERVICES_MAX {
        local.add_service(service(json!({"Name": format!("s{n}")})), Source::Api, now).unwrap();
    }
    let one_more = service(json!({"Name": "one-more"}));
    assert!(matches!(local.add_service(one_more, Source::Api, now), Err(LocalError::TooMany { .. })));
}
