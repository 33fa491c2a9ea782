//! The leads API end to end: create and merge, CSV imports with a mapping
//! and their reports, imports from a lead-source plugin through the
//! metered path, scoring rules and score order, change, do-not-contact,
//! export and erasure. On SQLite or PostgreSQL (TEST_DATABASE_URL).

mod api_server;

use api_server::*;
use serde_json::{Value, json};

/// A POST with a body of the given content type.
fn post_as(server: &Server, key: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}{path}", server.base))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", content_type)
        .header("connection", "close")
        .body(body.to_owned())
        .unwrap();
    let mut response = server.http.run(request).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn emails(page: &Value) -> Vec<String> {
    page["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lead| lead["email"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[test]
fn a_lead_posted_twice_in_another_case_is_one_lead() {
    let server = start();
    let key = &server.acme_key;
    let body = r#"{"email": "Grace@Navy.mil", "first_name": "Grace", "tags": ["admiral"],
                   "custom_fields": {"ship": "USS Hopper"}}"#;
    let (status, created) = server.call("POST", key, "/leads", Some(body), &[]);
    assert_eq!(status, 201, "{created}");
    let id = created["lead"]["id"].as_i64().unwrap();
    let (status, merged) = server.call(
        "POST",
        key,
        "/leads",
        Some(r#"{"email": "grace@navy.MIL", "last_name": "Hopper", "tags": ["navy"]}"#),
        &[],
    );
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["created"], false);
    let lead = &merged["lead"];
    assert_eq!(lead["id"].as_i64(), Some(id));
    assert_eq!(lead["first_name"], "Grace");
    assert_eq!(lead["last_name"], "Hopper");
    assert_eq!(lead["tags"], json!(["admiral", "navy"]));
    assert_eq!(lead["custom_fields"], json!({"ship": "USS Hopper"}));

    // Each bad input has its own code, and names the field.
    for (body, status, code) in [
        (r#"{"email": "nope"}"#, 422, "invalid_lead"),
        (r#"{"title": "CTO"}"#, 422, "lead_unidentifiable"),
        (
            r#"{"email": "a@b.co", "time_zone": "Mars/Base"}"#,
            422,
            "invalid_lead",
        ),
        (
            r#"{"email": "a@b.co", "shoe_size": 9}"#,
            400,
            "invalid_input",
        ),
        ("{", 400, "invalid_input"),
    ] {
        let (got, answer) = server.call("POST", key, "/leads", Some(body), &[]);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (_, answer) = server.call(
        "POST",
        key,
        "/leads",
        Some(r#"{"email": "a@b.co", "time_zone": "Mars/Base"}"#),
        &[],
    );
    assert_eq!(answer["error"]["field"], "time_zone");
}

#[test]
fn a_csv_upload_reports_created_updated_and_skipped_rows() {
    let server = start();
    let key = &server.acme_key;
    // Ada exists (the fixture); the file has her in capitals, a LinkedIn
    // duplicate, a row without a key and a bad address.
    let csv = "\
Email,First Name,Last Name,LinkedIn,Company Size,Tags
ADA@ACME-LEAD.EXAMPLE,Ada,Lovelace,,36,mathematician
bob@example.com,Bob,Stone,https://www.linkedin.com/in/bob-stone,120,
,Robert,Stone,linkedin.com/in/BOB-STONE/,,ceo;founder
,Nobody,Known,,,
broken@,Bad,Address,,,
";
    let (status, report) = post_as(
        &server,
        key,
        "/leads/import?tags=fall-list",
        "text/csv",
        csv,
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            &report["rows"],
            &report["created"],
            &report["updated"],
            &report["skipped"]
        ),
        (&json!(5), &json!(1), &json!(2), &json!(2)),
        "{report}"
    );
    let lines: Vec<i64> = report["skips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|skip| skip["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![5, 6]);
    let (status, bob) = server.call("GET", key, "/leads?q=stone", None, &[]);
    assert_eq!(status, 200);
    let bob = &bob["leads"][0];
    assert_eq!(bob["first_name"], "Robert");
    assert_eq!(bob["company_size"], 120);
    assert_eq!(bob["tags"], json!(["ceo", "fall-list", "founder"]));

    // The same through JSON, with an explicit mapping.
    let body = json!({
        "csv": "Mail,Role,Segment\ncyd@example.com,CTO,enterprise\n",
        "mapping": {"Mail": "email", "Role": "title", "Segment": "custom.segment"},
    });
    let (status, report) = server.call("POST", key, "/leads/import", Some(&body.to_string()), &[]);
    assert_eq!((status, &report["created"]), (200, &json!(1)), "{report}");
    let body = json!({"csv": "Mail\nx@y.z\n", "mapping": {"Mail": "e-mail"}});
    let (status, refused) = server.call("POST", key, "/leads/import", Some(&body.to_string()), &[]);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_mapping"))
    );
    let (status, refused) = post_as(&server, key, "/leads/import", "text/csv", "Name\nAda\n");
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_mapping"))
    );
}

#[test]
fn a_lead_source_import_is_charged_per_lead_found() {
    let server = start();
    let key = &server.acme_key;
    // Acme holds 100 credits; csv-leads costs 1 credit a lead returned.
    let body = json!({"source": "csv-leads", "query": {"limit": 30}, "tags": ["sourced"]});
    let (status, report) = server.call("POST", key, "/leads/import", Some(&body.to_string()), &[]);
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["found"], &report["created"], &report["charged"]),
        (&json!(30), &json!(30), &json!("30"))
    );
    let (_, credits) = server.call("GET", key, "/billing/credits", None, &[]);
    assert_eq!(credits["balance"]["available"], "70", "{credits}");
    let (_, page) = server.call("GET", key, "/leads?tag=sourced&limit=500", None, &[]);
    assert_eq!(page["leads"].as_array().unwrap().len(), 30);
    assert_eq!(page["leads"][0]["source"], "csv-leads");

    // A search the balance cannot cover is refused: nothing is imported.
    let body =
        json!({"source": "csv-leads", "query": {"limit": 500, "keywords": "nobody-matches-this"}});
    let (status, refused) = server.call("POST", key, "/leads/import", Some(&body.to_string()), &[]);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (402, Some("insufficient_credits")),
        "{refused}"
    );
    let (_, page) = server.call("GET", key, "/leads?limit=500", None, &[]);
    assert_eq!(
        page["leads"].as_array().unwrap().len(),
        31,
        "30 imported and Ada"
    );
    // A search that finds nothing costs nothing.
    let body =
        json!({"source": "csv-leads", "query": {"limit": 5, "keywords": "nobody-matches-this"}});
    let (status, report) = server.call("POST", key, "/leads/import", Some(&body.to_string()), &[]);
    assert_eq!(
        (status, &report["found"], &report["charged"]),
        (200, &json!(0), &json!("0")),
        "{report}"
    );
    let (_, credits) = server.call("GET", key, "/billing/credits", None, &[]);
    assert_eq!(credits["balance"]["available"], "70");
}

#[test]
fn scoring_rules_order_the_leads() {
    let server = start();
    let key = &server.acme_key;
    for body in [
        r#"{"email": "vp@big.example", "title": "VP Sales", "company_size": 5000}"#,
        r#"{"email": "intern@big.example", "title": "Intern", "company_size": 5000}"#,
        r#"{"email": "vp@tiny.example", "title": "vp of growth", "company_size": 4}"#,
    ] {
        assert_eq!(server.call("POST", key, "/leads", Some(body), &[]).0, 201);
    }
    let rules = r#"{"rules": [
        {"field": "title", "contains": "VP", "points": 20},
        {"field": "company_size", "at_least": 200, "points": 10},
        {"event": "replied", "points": 30, "half_life_days": 14}
    ]}"#;
    // A member may read the rules; setting them takes an admin.
    let (status, _) = server.call("PUT", key, "/leads/scoring", Some(rules), &[]);
    assert_eq!(status, 403);
    let (status, set) = server.call(
        "PUT",
        &server.globex_key,
        "/leads/scoring",
        Some(r#"{"rules": [{"field": "title", "points": 1}]}"#),
        &[],
    );
    assert_eq!(
        (status, set["error"]["code"].as_str()),
        (422, Some("invalid_rules")),
        "{set}"
    );
    assert!(
        set["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rules[0]:")
    );
    // Acme's admin sets them; every lead is rescored at once.
    let acme_admin = server.tenant_key(server.acme, tollgate::auth::Role::Admin);
    let (status, set) = server.call("PUT", &acme_admin, "/leads/scoring", Some(rules), &[]);
    assert_eq!((status, &set["rescored"]), (200, &json!(4)), "{set}");
    let (_, page) = server.call("GET", key, "/leads", None, &[]);
    assert_eq!(
        emails(&page),
        vec![
            "vp@big.example",
            "vp@tiny.example",
            "intern@big.example",
            "ada@acme-lead.example"
        ]
    );
    let scores: Vec<i64> = page["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lead| lead["score"].as_i64().unwrap())
        .collect();
    assert_eq!(scores, vec![30, 20, 10, 0]);
    let (_, page) = server.call("GET", key, "/leads?score_min=15&sort=score", None, &[]);
    assert_eq!(emails(&page), vec!["vp@tiny.example", "vp@big.example"]);
    // A change to a lead rescores it.
    let intern = page_id(&server, "intern@big.example");
    let (status, changed) = server.call(
        "PATCH",
        key,
        &format!("/leads/{intern}"),
        Some(r#"{"title": "VP Engineering", "phone": null}"#),
        &[],
    );
    assert_eq!(
        (status, &changed["lead"]["score"]),
        (200, &json!(30)),
        "{changed}"
    );
    let (_, rules) = server.call("GET", key, "/leads/scoring", None, &[]);
    assert_eq!(rules["rules"][2]["half_life_days"], 14);
}

fn page_id(server: &Server, email: &str) -> i64 {
    let (_, page) = server.call(
        "GET",
        &server.acme_key,
        &format!("/leads?q={email}"),
        None,
        &[],
    );
    page["leads"][0]["id"].as_i64().unwrap()
}

#[test]
fn a_lead_is_exported_marked_do_not_contact_and_erased() {
    let server = start();
    let key = &server.acme_key;
    let ada = server.acme_lead;
    let (status, export) = server.call("GET", key, &format!("/leads/{ada}/export"), None, &[]);
    assert_eq!(status, 200);
    assert_eq!(export["lead"]["email"], "ada@acme-lead.example");
    assert!(export["events"].is_array());
    // Her enrollment in Acme's sequence and the task about her.
    assert_eq!(export["enrollments"][0]["sequence"], server.acme_sequence);
    assert_eq!(export["tasks"][0]["title"], "Call Ada about Acme");

    let path = format!("/leads/{ada}/do-not-contact");
    let (status, marked) = server.call("PUT", key, &path, None, &[]);
    assert_eq!(
        (status, &marked["lead"]["do_not_contact"]["reason"]),
        (200, &json!("manual"))
    );
    let (_, page) = server.call("GET", key, "/leads?do_not_contact=true", None, &[]);
    assert_eq!(emails(&page), vec!["ada@acme-lead.example"]);
    let (status, lifted) = server.call("DELETE", key, &path, None, &[]);
    assert_eq!(
        (status, &lifted["lead"]["do_not_contact"]),
        (200, &Value::Null)
    );

    // A CSV export of the listing.
    let (status, content_type, bytes) = server.raw(key, "/leads?format=csv");
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("id,first_name,last_name,email,"), "{text}");
    assert!(text.contains("ada@acme-lead.example"), "{text}");

    // Erasing takes an admin; then nothing of her is left.
    assert_eq!(
        server
            .call("DELETE", key, &format!("/leads/{ada}"), None, &[])
            .0,
        403
    );
    let admin = server.tenant_key(server.acme, tollgate::auth::Role::Admin);
    assert_eq!(
        server
            .call("DELETE", &admin, &format!("/leads/{ada}"), None, &[])
            .0,
        204
    );
    let (status, gone) = server.call("GET", key, &format!("/leads/{ada}"), None, &[]);
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        server
            .call("GET", key, &format!("/leads/{ada}/export"), None, &[])
            .0,
        404
    );
    // Her enrollments and the tasks about her went with her.
    let (_, tasks) = server.call("GET", key, "/tasks", None, &[]);
    assert_eq!(tasks["tasks"], json!([]), "{tasks}");
    let sequence = server.acme_sequence;
    let path = format!("/sequences/{sequence}/enrollments");
    let (_, enrollments) = server.call("GET", key, &path, None, &[]);
    assert_eq!(enrollments["enrollments"], json!([]), "{enrollments}");
}
