//! The deal pipeline end to end: a board's positions persist as a drag and
//! drop sends them; a stage's rules (start a sequence, call a webhook,
//! create a task) fire once per change of stage, even when the same move
//! is sent twice; a won deal stops its lead's sequences. SQLite, or
//! PostgreSQL with TEST_DATABASE_URL.

mod engagement_world;

use engagement_world::*;
use serde_json::{Value, json};

fn column(world: &World, pipeline: i64, stage: &str) -> Vec<String> {
    let (status, board) = world.call("GET", &format!("/pipelines/{pipeline}"), None);
    assert_eq!(status, 200, "{board}");
    let stages = board["pipeline"]["stages"].as_array().unwrap();
    let stage = stages.iter().find(|held| held["name"] == stage).unwrap();
    stage["deals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|deal| deal["title"].as_str().unwrap().to_owned())
        .collect()
}

fn move_deal(world: &World, deal: i64, stage: i64, position: i64) -> Value {
    let body = json!({"stage": stage, "position": position}).to_string();
    let (status, moved) = world.call("POST", &format!("/deals/{deal}/move"), Some(&body));
    assert_eq!(status, 200, "{moved}");
    moved
}

#[test]
fn moving_a_deal_to_proposal_fires_its_rules_once_even_when_sent_twice() {
    let world = World::start(Setup {
        hooks: vec![
            (200, r#"{"id": "gw-1"}"#.into()),
            (200, r#"{"id": "gw-2"}"#.into()),
        ],
        ..Setup::default()
    });
    let mailbox = world.mailbox("email", "sam@acme.example", None);
    let follow_up = world.sequence(json!({"name": "Proposal follow-up", "steps": [
        {"kind": "wait", "business_days": 3},
        {"kind": "email", "mailbox": mailbox, "variants": [{"subject": "Our proposal", "body": "Any questions?"}]},
    ]}));
    let ada = world.lead(json!({"email": "ada@example.com", "first_name": "Ada"}));
    let body = json!({"name": "Sales", "stages": [
        {"name": "Lead"},
        {"name": "Qualified"},
        {"name": "Proposal", "rules": [
            {"action": "start_sequence", "sequence": follow_up},
            {"action": "call_webhook", "plugin": "webhook"},
            {"action": "create_task", "title": "Send the proposal to {{ lead.first_name | default(\"the client\") }}", "task": "email"},
        ]},
        {"name": "Won", "outcome": "won"},
        {"name": "Lost", "outcome": "lost"},
    ]});
    let (status, created) = world.call("POST", "/pipelines", Some(&body.to_string()));
    assert_eq!(status, 201, "{created}");
    let pipeline = created["pipeline"]["id"].as_i64().unwrap();
    let stage = |name: &str| {
        created["pipeline"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|stage| stage["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (proposal, won, lead_stage) = (stage("Proposal"), stage("Won"), stage("Lead"));
    let deal = |title: &str, lead: Option<i64>| {
        let body = json!({"pipeline": pipeline, "title": title, "value": "12000.00", "currency": "EUR", "owner": "sam", "lead": lead});
        let (status, created) = world.call("POST", "/deals", Some(&body.to_string()));
        assert_eq!(status, 201, "{created}");
        created["deal"]["id"].as_i64().unwrap()
    };
    let (engines, looms, cards) = (
        deal("Engines", Some(ada)),
        deal("Looms", None),
        deal("Cards", None),
    );
    // New deals go on top of their column.
    assert_eq!(
        column(&world, pipeline, "Lead"),
        vec!["Cards", "Looms", "Engines"]
    );

    // Dragged to Proposal: its three rules fire.
    let moved = move_deal(&world, engines, proposal, 0);
    let fired: Vec<(&str, &str)> = moved["fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|firing| {
            (
                firing["action"].as_str().unwrap(),
                firing["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fired,
        vec![
            ("start_sequence", "done"),
            ("call_webhook", "done"),
            ("create_task", "done")
        ],
        "{moved}"
    );
    // The same move sent again: the deal is there already, nothing fires.
    let again = move_deal(&world, engines, proposal, 0);
    assert_eq!(
        (&again["move"], &again["fired"]),
        (&Value::Null, &json!([])),
        "{again}"
    );
    // And a retry with one Idempotency-Key is answered once.
    let body = json!({"stage": proposal, "position": 0}).to_string();
    let request = |key: &str| {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/api/v1/deals/{looms}/move", world.root))
            .header("authorization", format!("Bearer {}", world.key))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.clone())
            .unwrap();
        let mut response = world.http.run(request).unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    let (first, second) = (request("drag-looms"), request("drag-looms"));
    assert_eq!((first.0, &first.1), (200, &second.1));

    // Each rule acted once per change: one enrollment, two webhook posts
    // (Engines, then Looms), two tasks.
    let (_, enrollments) = world.call("GET", &format!("/sequences/{follow_up}/enrollments"), None);
    assert_eq!(
        enrollments["enrollments"].as_array().unwrap().len(),
        1,
        "{enrollments}"
    );
    let hooks = world.hooks.requests();
    assert_eq!(hooks.len(), 2);
    assert!(
        hooks[0].body.contains("deal.stage_changed") && hooks[0].body.contains("Engines"),
        "{}",
        hooks[0].body
    );
    assert!(
        hooks[0]
            .header("x-tollgate-signature")
            .is_some_and(|sig| sig.starts_with("v1="))
    );
    let (_, tasks) = world.call("GET", "/tasks", None);
    let titles: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        vec![
            "Send the proposal to Ada",
            "Send the proposal to the client"
        ]
    );
    // Looms has no lead: its start_sequence failed and says why.
    let (_, looms_deal) = world.call("GET", &format!("/deals/{looms}"), None);
    let firings = &looms_deal["moves"][1]["fired"];
    assert_eq!(
        (&firings[0]["status"], &firings[0]["detail"]),
        (&json!("failed"), &json!("the deal has no lead to enroll")),
        "{looms_deal}"
    );

    // Positions persist as dropped: Looms went on top of Proposal.
    assert_eq!(
        column(&world, pipeline, "Proposal"),
        vec!["Looms", "Engines"]
    );
    move_deal(&world, cards, lead_stage, 5);
    assert_eq!(column(&world, pipeline, "Lead"), vec!["Cards"]);
    move_deal(&world, engines, proposal, 0);
    assert_eq!(
        column(&world, pipeline, "Proposal"),
        vec!["Engines", "Looms"]
    );

    // Won: Ada's follow-up sequence stops.
    let moved = move_deal(&world, engines, won, 0);
    assert_eq!(moved["deal"]["stage"], won);
    let (_, enrollments) = world.call("GET", &format!("/sequences/{follow_up}/enrollments"), None);
    assert_eq!(
        (
            &enrollments["enrollments"][0]["status"],
            &enrollments["enrollments"][0]["reason"]
        ),
        (&json!("stopped"), &json!("deal_won"))
    );
    let (_, history) = world.call("GET", &format!("/deals/{engines}"), None);
    let stages: Vec<i64> = history["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["to_stage"].as_i64().unwrap())
        .collect();
    assert_eq!(stages, vec![lead_stage, proposal, won]);
    assert_eq!(history["deal"]["value"], "12000.00");
    assert_eq!(history["deal"]["currency"], "EUR");
    // The two webhook calls were metered: 0.2 credits each.
    assert_eq!(world.balance(), "999.6");
}

#[test]
fn bad_pipelines_and_deals_are_refused_with_the_reason() {
    let world = World::start(Setup::default());
    for (body, expect) in [
        (json!({"name": "P", "stages": []}), "stages: 1 to 30"),
        (
            json!({"name": "P", "stages": [{"name": "A", "outcome": "maybe"}]}),
            "outcome",
        ),
        (
            json!({"name": "P", "stages": [{"name": "A", "rules": [{"action": "start_sequence", "sequence": 999}]}]}),
            "sequence 999 not found",
        ),
        (
            json!({"name": "P", "stages": [{"name": "A", "rules": [{"action": "create_task", "title": "{{ x"}]}]}),
            "create_task: title",
        ),
    ] {
        let (status, refused) = world.call("POST", "/pipelines", Some(&body.to_string()));
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (422, Some("invalid_pipeline")),
            "{refused}"
        );
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expect),
            "{refused}"
        );
    }
    let (_, created) = world.call(
        "POST",
        "/pipelines",
        Some(&json!({"name": "P", "stages": [{"name": "A"}]}).to_string()),
    );
    let pipeline = created["pipeline"]["id"].as_i64().unwrap();
    for (body, expect) in [
        (
            json!({"pipeline": pipeline, "title": "", "value": "1"}),
            "title",
        ),
        (
            json!({"pipeline": pipeline, "title": "T", "value": "ten"}),
            "value",
        ),
        (
            json!({"pipeline": pipeline, "title": "T", "currency": "XXX"}),
            "currency",
        ),
        (
            json!({"pipeline": pipeline, "title": "T", "lead": 12345}),
            "lead 12345 not found",
        ),
        (
            json!({"pipeline": pipeline, "title": "T", "stage": 12345}),
            "stage 12345",
        ),
    ] {
        let (status, refused) = world.call("POST", "/deals", Some(&body.to_string()));
        assert_eq!(status, 422, "{body}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expect),
            "{refused}"
        );
    }
}

#[test]
fn a_pipeline_is_edited_keeping_its_deals_and_history() {
    let world = World::start(Setup::default());
    let body = json!({"name": "Sales", "stages": [
        {"name": "Lead"},
        {"name": "Demo", "rules": [{"action": "create_task", "title": "Prepare the demo", "task": "todo"}]},
        {"name": "Stale"},
    ]});
    let (_, created) = world.call("POST", "/pipelines", Some(&body.to_string()));
    let pipeline = created["pipeline"]["id"].as_i64().unwrap();
    let stages: Vec<i64> = created["pipeline"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["id"].as_i64().unwrap())
        .collect();
    let (lead_stage, demo, stale) = (stages[0], stages[1], stages[2]);
    let body = json!({"pipeline": pipeline, "title": "Looms"});
    let (_, deal) = world.call("POST", "/deals", Some(&body.to_string()));
    let looms = deal["deal"]["id"].as_i64().unwrap();
    move_deal(&world, looms, demo, 0);

    // Demo is renamed and moved first, with a new rule; Lead keeps its
    // place after it; Won is added; Stale goes.
    let edit = json!({"name": "Sales 2027", "stages": [
        {"id": demo, "name": "Demo booked", "rules": [{"action": "create_task", "title": "Send the agenda", "task": "email"}]},
        {"id": lead_stage, "name": "Lead"},
        {"name": "Won", "outcome": "won"},
    ]});
    let (status, edited) = world.call(
        "PUT",
        &format!("/pipelines/{pipeline}"),
        Some(&edit.to_string()),
    );
    assert_eq!(status, 200, "{edited}");
    let names: Vec<&str> = edited["pipeline"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Demo booked", "Lead", "Won"]);
    assert_eq!(column(&world, pipeline, "Demo booked"), vec!["Looms"]);
    // The new rule fires on the next entry; the old one's firing stays in
    // the history.
    move_deal(&world, looms, lead_stage, 0);
    move_deal(&world, looms, demo, 0);
    let (_, tasks) = world.call("GET", "/tasks", None);
    let titles: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["Prepare the demo", "Send the agenda"]);
    let (_, history) = world.call("GET", &format!("/deals/{looms}"), None);
    assert_eq!(history["moves"].as_array().unwrap().len(), 4);
    assert_eq!(history["moves"][1]["fired"][0]["status"], "done");
    // A removed stage takes no deals.
    let body = json!({"stage": stale, "position": 0}).to_string();
    let (status, refused) = world.call("POST", &format!("/deals/{looms}/move"), Some(&body));
    assert_eq!(status, 422, "{refused}");
    // A stage with deals cannot be removed.
    let edit = json!({"name": "Sales", "stages": [{"id": lead_stage, "name": "Lead"}]});
    let (status, refused) = world.call(
        "PUT",
        &format!("/pipelines/{pipeline}"),
        Some(&edit.to_string()),
    );
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("holds 1 deal;"),
        "{refused}"
    );
}
