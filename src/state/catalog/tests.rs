use super::*;
use crate::state::command::{
    CatalogCommand, CheckDefinition, Deregistration, Outcome, Registration, ServiceDefinition,
};

fn registration(node: &str, address: &str) -> Registration {
    Registration { node: node.into(), address: address.into(), ..Registration::default() }
}

fn with_service(mut registration: Registration, id: &str, name: &str, tags: &[&str]) -> Registration {
    let tags = tags.iter().map(|tag| tag.to_string()).collect();
    registration.service = Some(ServiceDefinition { id: id.into(), service: name.into(), tags, ..Default::default() });
    registration
}

fn with_check(mut registration: Registration, id: &str, service_id: &str, status: CheckStatus) -> Registration {
    let check = CheckDefinition {
        check_id: id.into(),
        name: format!("{id} name"),
        service_id: service_id.into(),
        status,
        ..Default::default()
    };
    registration.checks.push(check);
    registration
}

fn register(catalog: &mut Catalog, index: u64, registration: Registration) -> Outcome {
    catalog.apply(index, &CatalogCommand::Register(registration))
}

fn deregister(
    catalog: &mut Catalog,
    index: u64,
    node: &str,
    service_id: Option<&str>,
    check_id: Option<&str>,
) -> Outcome {
    let deregistration = Deregistration {
        node: node.into(),
        service_id: service_id.map(str::to_owned),
        check_id: check_id.map(str::to_owned),
    };
    catalog.apply(index, &CatalogCommand::Deregister(deregistration))
}

fn rejected(error: CatalogError) -> Outcome {
    Outcome::Rejected(error.to_string())
}

/// A node with a web service (id web-1), a service check and a node-level check, at index 1.
fn web_node(name: &str) -> Registration {
    let registration = with_service(registration(name, "10.0.0.1"), "web-1", "web", &["v1"]);
    let registration = with_check(registration, "web-alive", "web-1", CheckStatus::Passing);
    with_check(registration, "mem", "", CheckStatus::Passing)
}

/// A registration without a node name is rejected.
#[test]
fn register_requires_node_name() {
    let mut catalog = Catalog::default();
    assert_eq!(register(&mut catalog, 1, registration("", "10.0.0.1")), rejected(CatalogError::MissingNode));
    assert_eq!(catalog, Catalog::default());
}

/// A node is only created with an address, also when the registration asks to skip node updates.
#[test]
fn register_requires_address_for_new_node() {
    let mut catalog = Catalog::default();
    assert_eq!(register(&mut catalog, 1, registration("n1", "")), rejected(CatalogError::MissingAddress));
    let skipping = Registration { skip_node_update: true, ..registration("n1", "") };
    let expected = rejected(CatalogError::MissingAddressForNewNode { node: "n1".into() });
    assert_eq!(register(&mut catalog, 2, skipping), expected);
    assert_eq!(catalog, Catalog::default());
}

/// Without `skip_node_update`, an existing node also needs the address (Consul's endpoint rule).
#[test]
fn register_existing_node_without_address_needs_skip() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, registration("n1", "10.0.0.1"));
    assert_eq!(register(&mut catalog, 2, registration("n1", "")), rejected(CatalogError::MissingAddress));
}

/// `skip_node_update` on an existing node leaves its row alone while the service is added.
#[test]
fn skip_node_update_leaves_node_alone() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, registration("n1", "10.0.0.1"));
    let update = Registration { skip_node_update: true, ..with_service(registration("n1", ""), "", "web", &[]) };
    assert_eq!(register(&mut catalog, 2, update), Outcome::Done);
    let node = catalog.node("n1").unwrap();
    assert_eq!((node.address.as_str(), node.modify_index), ("10.0.0.1", 1));
    assert!(catalog.service("n1", "web").is_some());
}

/// A new node takes the index as create and modify index, and moves the nodes table index.
#[test]
fn new_node_takes_index() {
    let mut catalog = Catalog::default();
    let mut registration = registration("n1", "10.0.0.1");
    registration.node_id = "uuid-1".into();
    registration.node_meta.insert("rack".into(), "r1".into());
    register(&mut catalog, 4, registration);
    let node = catalog.node("n1").unwrap();
    assert_eq!((node.id.as_str(), node.create_index, node.modify_index), ("uuid-1", 4, 4));
    assert_eq!(node.meta.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(catalog.nodes_index(), 4);
}

/// Registering an identical node again changes nothing, not even the table index.
#[test]
fn unchanged_node_is_not_rewritten() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, registration("n1", "10.0.0.1"));
    register(&mut catalog, 2, registration("n1", "10.0.0.1"));
    assert_eq!(catalog.node("n1").unwrap().modify_index, 1);
    assert_eq!(catalog.nodes_index(), 1);
}

/// A changed node keeps its create index and takes the new modify index.
#[test]
fn changed_node_bumps_modify_index() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, registration("n1", "10.0.0.1"));
    register(&mut catalog, 2, registration("n1", "10.0.0.2"));
    let node = catalog.node("n1").unwrap();
    assert_eq!((node.address.as_str(), node.create_index, node.modify_index), ("10.0.0.2", 1, 2));
}

/// A registration without a node ID keeps the ID the node already has.
#[test]
fn omitted_node_id_is_kept() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, Registration { node_id: "uuid-1".into(), ..registration("n1", "10.0.0.1") });
    register(&mut catalog, 2, registration("n1", "10.0.0.2"));
    assert_eq!(catalog.node("n1").unwrap().id, "uuid-1");
}

/// Registering a node ID that another node name holds renames: the old node goes with its rows.
#[test]
fn node_id_under_new_name_replaces_old_node() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, Registration { node_id: "uuid-1".into(), ..web_node("old") });
    register(&mut catalog, 2, Registration { node_id: "uuid-1".into(), ..registration("new", "10.0.0.9") });
    assert!(catalog.node("old").is_none());
    assert_eq!(catalog.services_of_node("old").count() + catalog.checks_of_node("old").count(), 0);
    assert_eq!(catalog.node("new").unwrap().id, "uuid-1");
}

/// A live node (serfHealth not critical) keeps its name against a registration with another ID.
#[test]
fn live_node_keeps_its_name_against_other_id() {
    let mut catalog = Catalog::default();
    let holder = Registration { node_id: "uuid-1".into(), ..registration("n1", "10.0.0.1") };
    register(&mut catalog, 1, with_check(holder, SERF_HEALTH_CHECK_ID, "", CheckStatus::Passing));
    let before = catalog.clone();
    let intruder = Registration { node_id: "uuid-2".into(), ..registration("n1", "10.0.0.2") };
    let expected = CatalogError::NodeNameReserved {
        node: "n1".into(),
        holder_id: "uuid-1".into(),
        holder_address: "10.0.0.1".into(),
    };
    assert_eq!(register(&mut catalog, 2, intruder), rejected(expected));
    assert_eq!(catalog, before);
}

/// A node whose serfHealth is critical, or that has no ID, yields its name to a new ID.
#[test]
fn dead_or_id_less_node_yields_its_name() {
    let mut catalog = Catalog::default();
    let holder = Registration { node_id: "uuid-1".into(), ..registration("n1", "10.0.0.1") };
    register(&mut catalog, 1, with_check(holder, SERF_HEALTH_CHECK_ID, "", CheckStatus::Critical));
    let newcomer = Registration { node_id: "uuid-2".into(), ..registration("n1", "10.0.0.2") };
    assert_eq!(register(&mut catalog, 2, newcomer), Outcome::Done);
    assert_eq!(catalog.node("n1").unwrap().id, "uuid-2");

    let mut catalog = Catalog::default();
    register(
        &mut catalog,
        1,
        with_check(registration("n2", "10.0.0.1"), SERF_HEALTH_CHECK_ID, "", CheckStatus::Passing),
    );
    let newcomer = Registration { node_id: "uuid-3".into(), ..registration("n2", "10.0.0.3") };
    assert_eq!(register(&mut catalog, 2, newcomer), Outcome::Done);
}

/// A service without an id is stored under its name.
#[test]
fn service_id_defaults_to_name() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 3, with_service(registration("n1", "10.0.0.1"), "", "web", &[]));
    let service = catalog.service("n1", "web").unwrap();
    assert_eq!((service.service.as_str(), service.create_index, service.modify_index), ("web", 3, 3));
    assert_eq!(catalog.services_index(), 3);
}

/// A service without a name is rejected, and the node of the same registration is not written.
#[test]
fn service_name_is_required() {
    let mut catalog = Catalog::default();
    let registration = with_service(registration("n1", "10.0.0.1"), "web-1", "", &[]);
    assert_eq!(register(&mut catalog, 1, registration), rejected(CatalogError::MissingServiceName));
    assert_eq!(catalog, Catalog::default());
}

/// Re-registering an identical service changes nothing; a changed one keeps create, bumps modify.
#[test]
fn service_is_rewritten_only_when_changed() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, with_service(registration("n1", "10.0.0.1"), "web-1", "web", &["a"]));
    register(&mut catalog, 2, with_service(registration("n1", "10.0.0.1"), "web-1", "web", &["a"]));
    assert_eq!(catalog.service("n1", "web-1").unwrap().modify_index, 1);
    assert_eq!(catalog.services_index(), 1);
    register(&mut catalog, 3, with_service(registration("n1", "10.0.0.1"), "web-1", "web", &["b"]));
    let service = catalog.service("n1", "web-1").unwrap();
    assert_eq!((service.create_index, service.modify_index), (1, 3));
    assert_eq!(catalog.services_index(), 3);
}

/// A check without an id is stored under its name; one with neither is rejected.
#[test]
fn check_id_defaults_to_name() {
    let mut catalog = Catalog::default();
    let mut registration = registration("n1", "10.0.0.1");
    registration.checks.push(CheckDefinition { name: "disk".into(), ..Default::default() });
    register(&mut catalog, 1, registration.clone());
    assert_eq!(catalog.check("n1", "disk").unwrap().status, CheckStatus::Critical);
    registration.checks.push(CheckDefinition::default());
    assert_eq!(register(&mut catalog, 2, registration), rejected(CatalogError::MissingCheckId));
}

/// A check naming a service that is neither on the node nor in the registration rejects the
/// whole registration: node, service and the other checks are not written.
#[test]
fn check_with_unknown_service_rejects_everything() {
    let mut catalog = Catalog::default();
    let registration = with_service(registration("n1", "10.0.0.1"), "web-1", "web", &[]);
    let registration = with_check(registration, "ok", "", CheckStatus::Passing);
    let registration = with_check(registration, "bad", "db-1", CheckStatus::Passing);
    let expected = CatalogError::UnknownServiceId { service_id: "db-1".into(), check_id: "bad".into() };
    assert_eq!(register(&mut catalog, 1, registration), rejected(expected));
    assert_eq!(catalog, Catalog::default());
}

/// A check may name a service registered earlier on the node, and copies its name and tags.
#[test]
fn check_copies_name_and_tags_of_existing_service() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, with_service(registration("n1", "10.0.0.1"), "web-1", "web", &["v1"]));
    let check_only = Registration { skip_node_update: true, ..registration("n1", "") };
    register(&mut catalog, 2, with_check(check_only, "alive", "web-1", CheckStatus::Warning));
    let check = catalog.check("n1", "alive").unwrap();
    assert_eq!((check.service_name.as_str(), check.service_tags.as_slice()), ("web", ["v1".to_string()].as_slice()));
    assert_eq!((check.status, check.create_index), (CheckStatus::Warning, 2));
}

/// Re-registering an identical check changes nothing; a status change bumps it.
#[test]
fn check_is_rewritten_only_when_changed() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, web_node("n1"));
    assert_eq!(catalog.check("n1", "web-alive").unwrap().modify_index, 1);
    assert_eq!(catalog.checks_index(), 1);
    let failing = with_check(registration("n1", "10.0.0.1"), "mem", "", CheckStatus::Critical);
    register(&mut catalog, 3, failing);
    let check = catalog.check("n1", "mem").unwrap();
    assert_eq!((check.status, check.create_index, check.modify_index), (CheckStatus::Critical, 1, 3));
    assert_eq!(catalog.checks_index(), 3);
}

/// When a service's tags change, its existing checks' copies follow.
#[test]
fn service_change_relabels_its_checks() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, with_service(registration("n1", "10.0.0.1"), "web-1", "web", &["v2"]));
    let check = catalog.check("n1", "web-alive").unwrap();
    assert_eq!((check.service_tags.as_slice(), check.modify_index), (["v2".to_string()].as_slice(), 2));
    assert_eq!(catalog.check("n1", "mem").unwrap().modify_index, 1);
    assert_eq!(catalog.checks_index(), 2);
}

/// Renaming a service under the same id moves the instance from the old name to the new one.
#[test]
fn service_renamed_under_same_id_moves_between_names() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, with_service(registration("n1", "10.0.0.1"), "web-1", "api", &["v1"]));
    assert!(catalog.service_instances("web").is_empty());
    assert_eq!(catalog.service_instances("api").len(), 1);
    assert_eq!(catalog.check("n1", "web-alive").unwrap().service_name, "api");
    assert_eq!(catalog.index_for_service("web"), 2, "the old name went extinct at 2");
}

/// Deregistering a check removes only that check.
#[test]
fn deregister_check_removes_only_it() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    assert_eq!(deregister(&mut catalog, 2, "n1", None, Some("mem")), Outcome::Done);
    assert!(catalog.check("n1", "mem").is_none());
    assert!(catalog.check("n1", "web-alive").is_some());
    assert_eq!((catalog.checks_index(), catalog.services_index()), (2, 1));
}

/// Deregistering a service removes it with its checks, and leaves node-level checks.
#[test]
fn deregister_service_removes_its_checks() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    deregister(&mut catalog, 2, "n1", Some("web-1"), None);
    assert!(catalog.service("n1", "web-1").is_none());
    assert!(catalog.check("n1", "web-alive").is_none());
    assert!(catalog.check("n1", "mem").is_some());
    assert_eq!((catalog.services_index(), catalog.checks_index(), catalog.nodes_index()), (2, 2, 1));
}

/// A service id in a deregistration wins over a check id, as in Consul.
#[test]
fn deregister_service_id_wins_over_check_id() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    deregister(&mut catalog, 2, "n1", Some("web-1"), Some("mem"));
    assert!(catalog.service("n1", "web-1").is_none());
    assert!(catalog.check("n1", "mem").is_some());
}

/// Deregistering a node removes it with every service and check on it.
#[test]
fn deregister_node_removes_everything_on_it() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, web_node("n2"));
    deregister(&mut catalog, 3, "n1", None, Some(""));
    assert!(catalog.node("n1").is_none());
    assert_eq!(catalog.services_of_node("n1").count() + catalog.checks_of_node("n1").count(), 0);
    assert_eq!(catalog.service_instances("web").len(), 1);
    assert_eq!((catalog.nodes_index(), catalog.services_index(), catalog.checks_index()), (3, 3, 3));
}

/// Deregistering something absent succeeds and changes nothing.
#[test]
fn deregister_absent_is_a_no_op() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    let before = catalog.clone();
    deregister(&mut catalog, 2, "n1", None, Some("nope"));
    deregister(&mut catalog, 3, "n1", Some("nope"), None);
    deregister(&mut catalog, 4, "n9", None, None);
    assert_eq!(catalog, before);
}

/// A deregistration without a node name is rejected.
#[test]
fn deregister_requires_node_name() {
    let mut catalog = Catalog::default();
    assert_eq!(deregister(&mut catalog, 1, "", None, None), rejected(CatalogError::MissingNode));
}

/// Instances of a service come with their node, sorted by node name, then service id.
#[test]
fn service_instances_sorted_by_node_then_id() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, with_service(registration("n2", "10.0.0.2"), "web-b", "web", &[]));
    register(&mut catalog, 2, with_service(registration("n1", "10.0.0.1"), "web-b", "web", &[]));
    register(&mut catalog, 3, with_service(registration("n1", "10.0.0.1"), "web-a", "web", &[]));
    register(&mut catalog, 4, with_service(registration("n1", "10.0.0.1"), "db", "db", &[]));
    let found: Vec<(&str, &str, &str)> = catalog
        .service_instances("web")
        .into_iter()
        .map(|(node, service)| (node.node.as_str(), node.address.as_str(), service.id.as_str()))
        .collect();
    assert_eq!(found, [("n1", "10.0.0.1", "web-a"), ("n1", "10.0.0.1", "web-b"), ("n2", "10.0.0.2", "web-b")]);
    assert!(catalog.service_instances("nope").is_empty());
}

/// Service names are found without ASCII case, as Consul's service index does: the exact
/// spelling when a service has it, else every other spelling; the name's index moves with them.
#[test]
fn service_names_match_without_case() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, with_service(registration("n1", "10.0.0.1"), "web-1", "Web", &[]));
    register(&mut catalog, 2, with_service(registration("n2", "10.0.0.2"), "web-2", "WEB", &[]));
    register(&mut catalog, 3, with_service(registration("n3", "10.0.0.3"), "db", "db", &[]));
    let ids = |catalog: &Catalog, name: &str| -> Vec<String> {
        catalog.service_instances(name).into_iter().map(|(_, s)| s.id.clone()).collect()
    };
    assert_eq!(ids(&catalog, "web"), ["web-1", "web-2"]);
    assert_eq!(ids(&catalog, "Web"), ["web-1"], "an exact spelling is taken alone");
    assert_eq!(catalog.index_for_service("web"), 2);
    register(&mut catalog, 4, with_check(registration("n1", "10.0.0.1"), "alive", "web-1", CheckStatus::Critical));
    assert_eq!(catalog.index_for_service("web"), 4, "a change to any spelling moves the index");
    assert!(catalog.passing_instances("web").iter().all(|(_, s)| s.id == "web-2"));
    assert_eq!(ids(&catalog, "DB"), ["db"]);
}

/// Service names list the union of their instances' tags.
#[test]
fn service_names_union_tags() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, with_service(registration("n1", "10.0.0.1"), "", "web", &["a", "b"]));
    register(&mut catalog, 2, with_service(registration("n2", "10.0.0.2"), "", "web", &["b", "c"]));
    register(&mut catalog, 3, with_service(registration("n2", "10.0.0.2"), "", "db", &[]));
    let names = catalog.service_names();
    let tags: Vec<&str> = names["web"].iter().map(String::as_str).collect();
    assert_eq!(tags, ["a", "b", "c"]);
    assert!(names["db"].is_empty());
    assert_eq!(names.len(), 2);
}

/// Checks of a service are only those bound to it; checks of a node are all of them.
#[test]
fn checks_of_service_and_node() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, web_node("n2"));
    let ids = |checks: Vec<&HealthCheck>| checks.iter().map(|c| c.check_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(catalog.checks_of_service("n1", "web-1").collect()), ["web-alive"]);
    assert_eq!(ids(catalog.checks_of_node("n1").collect()), ["mem", "web-alive"]);
    assert_eq!(catalog.checks().count(), 4);
}

/// A service's index moves with its own instances and checks, and with node-level checks and
/// node changes of its nodes, but not with changes to other services.
#[test]
fn service_index_follows_what_its_health_shows() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, with_service(registration("n2", "10.0.0.2"), "", "db", &[]));
    assert_eq!((catalog.index_for_service("web"), catalog.index_for_service("db")), (1, 2));
    register(&mut catalog, 3, with_check(registration("n1", "10.0.0.1"), "web-alive", "web-1", CheckStatus::Critical));
    assert_eq!((catalog.index_for_service("web"), catalog.index_for_service("db")), (3, 2));
    register(&mut catalog, 4, with_check(registration("n1", "10.0.0.1"), "mem", "", CheckStatus::Warning));
    assert_eq!(catalog.index_for_service("web"), 4);
    register(&mut catalog, 5, registration("n1", "10.0.0.9"));
    assert_eq!((catalog.index_for_service("web"), catalog.index_for_service("db")), (5, 2));
}

/// A name without instances answers the last extinction, or before any the highest table index.
#[test]
fn index_for_missing_service() {
    let mut catalog = Catalog::default();
    assert_eq!(catalog.index_for_service("web"), 1);
    register(&mut catalog, 4, web_node("n1"));
    assert_eq!(catalog.index_for_service("db"), 4);
    deregister(&mut catalog, 6, "n1", Some("web-1"), None);
    register(&mut catalog, 7, registration("n2", "10.0.0.2"));
    assert_eq!((catalog.index_for_service("web"), catalog.index_for_service("db")), (6, 6));
}

/// Every catalog these writes reach passes the structural check.
#[test]
fn writes_keep_catalog_consistent() {
    let mut catalog = Catalog::default();
    register(&mut catalog, 1, web_node("n1"));
    register(&mut catalog, 2, with_service(registration("n1", "10.0.0.1"), "web-1", "api", &["x"]));
    deregister(&mut catalog, 3, "n1", None, Some("mem"));
    assert_eq!(catalog.check_consistency(3), Ok(()));
    assert!(catalog.check_consistency(1).is_err(), "indexes past the log are refused");
}

/// `?passing` keeps only instances whose node checks and own checks all pass: a critical node
/// check (serfHealth of a failed agent) hides every service on the node, a warning on one
/// instance hides only that instance, and another instance's check does not count.
#[test]
fn passing_instances_follow_node_and_service_checks() {
    let mut catalog = Catalog::default();
    let healthy = with_check(
        with_service(registration("n1", "10.0.0.1"), "web-1", "web", &[]),
        "svc-1",
        "web-1",
        CheckStatus::Passing,
    );
    register(&mut catalog, 1, with_check(healthy, SERF_HEALTH_CHECK_ID, "", CheckStatus::Passing));
    let warned = with_check(
        with_service(registration("n2", "10.0.0.2"), "web-2", "web", &[]),
        "svc-2",
        "web-2",
        CheckStatus::Warning,
    );
    register(&mut catalog, 2, warned);
    register(&mut catalog, 3, with_service(registration("n2", "10.0.0.2"), "web-3", "web", &[]));
    let names = |catalog: &Catalog| -> Vec<String> {
        catalog.passing_instances("web").iter().map(|(_, instance)| instance.id.clone()).collect()
    };
    assert_eq!(names(&catalog), ["web-1", "web-3"]);

    register(
        &mut catalog,
        4,
        with_check(registration("n1", "10.0.0.1"), SERF_HEALTH_CHECK_ID, "", CheckStatus::Critical),
    );
    assert_eq!(names(&catalog), ["web-3"]);
    assert_eq!(catalog.service_instances("web").len(), 3, "failing instances stay in the catalog");
    assert!(catalog.passing_instances("db").is_empty());
}
