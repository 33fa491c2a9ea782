//! The REST API end to end: a server on loopback, real plugins, the real
//! ledger, on SQLite or on PostgreSQL (TEST_DATABASE_URL).

mod api_server;

use api_server::*;

#[test]
fn lead_searches_are_charged_per_lead_until_a_402() {
    let server = start();
    let mut charged = 0;
    for n in 1..=4 {
        let (status, body) = server.search(&server.acme_key, r#"{"limit": 25}"#);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["leads"].as_array().unwrap().len(), 25);
        assert_eq!(
            (body["units"].as_u64(), body["charged"].as_str()),
            (Some(25), Some("25"))
        );
        charged += 25;
        assert_eq!(
            body["balance"]["available"],
            (100 - charged).to_string(),
            "call {n}"
        );
    }
    let (status, body) = server.search(&server.acme_key, r#"{"limit": 25}"#);
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_credits");
    assert_eq!(
        (
            body["error"]["available"].as_str(),
            body["error"]["required"].as_str()
        ),
        (Some("0"), Some("25"))
    );
    assert_eq!(
        server.ledger(),
        (
            Credits::ZERO,
            Credits::ZERO,
            Credits::from_whole(100).unwrap()
        )
    );
    let mut conn = server.database.get().unwrap();
    let records = tollgate::metering::records(&mut conn, server.acme, 100).unwrap();
    assert_eq!(records.len(), 4, "the refused call ran nothing");
    assert_eq!(
        records.iter().map(|record| record.credits).sum::<i64>(),
        100_000_000
    );

    let (status, body) = server.get(&server.acme_key, "/billing/credits");
    assert_eq!(status, 200);
    assert_eq!(body["balance"]["posted"], "0");
}

#[test]
fn each_bad_request_has_its_own_error_and_charges_nothing() {
    let server = start();
    let before = server.ledger();
    let check = |(status, body): (u16, serde_json::Value), expect_status: u16, code: &str| {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (expect_status, Some(code)),
            "{body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        body
    };
    let search = "/plugins/csv-leads/invoke/search";
    check(server.post(None, search, "{}"), 401, "unauthorized");
    check(
        server.post(Some("tg_0000"), search, "{}"),
        401,
        "unauthorized",
    );
    check(
        server.post(Some(&server.operator_key), search, "{}"),
        403,
        "forbidden",
    );
    check(
        server.post(Some(&server.acme_key), "/plugins/nope/invoke/search", "{}"),
        404,
        "unknown_plugin",
    );
    let body = check(
        server.post(
            Some(&server.acme_key),
            "/plugins/csv-leads/invoke/send",
            "{}",
        ),
        404,
        "unknown_function",
    );
    assert_eq!(
        body["error"]["message"],
        "a lead-source plugin has no function \"send\"; it has search, enrich"
    );
    let body = check(
        server.search(&server.acme_key, "{\"limit\": "),
        400,
        "invalid_input",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input for search: "),
        "{body}"
    );
    check(
        server.search(&server.acme_key, r#"{"limit": "ten"}"#),
        400,
        "invalid_input",
    );
    let huge = format!(r#"{{"limit": 1, "keywords": "{}"}}"#, "x".repeat(70_000));
    check(
        server.search(&server.acme_key, &huge),
        413,
        "body_too_large",
    );
    check(
        server.post(
            Some(&server.acme_key),
            "/plugins/http-leads/invoke/search",
            r#"{"limit": 5}"#,
        ),
        409,
        "plugin_not_enabled",
    );
    check(
        server.post(
            Some(&server.acme_key),
            "/plugins/csv-leads/invoke/enrich",
            r#"{"email": "a@b.c", "custom_fields": []}"#,
        ),
        409,
        "unpriced",
    );
    // The plugin ran and refused: nothing charged, and the answer says so.
    let body = check(
        server.search(&server.acme_key, r#"{"limit": 5, "cursor": "page-two"}"#),
        422,
        "plugin_invalid_input",
    );
    assert_eq!(
        (
            body["error"]["charged"].as_str(),
            body["error"]["retryable"].as_bool()
        ),
        (Some("0"), Some(false))
    );
    assert!(body["error"]["call_id"].as_str().is_some());
    assert_eq!(server.ledger(), before);
}

#[test]
fn no_tenant_sees_another_tenants_balance_or_data() {
    let server = start();
    let (status, body) = server.get(&server.globex_key, "/billing/credits");
    assert_eq!(status, 200);
    assert_eq!(body["balance"]["posted"], "0");
    assert_ne!(body["tenant"], server.acme.0);
    // Globex has uploaded nothing: Acme's file is not Globex's to search.
    let mut conn = server.database.get().unwrap();
    let wallet = queries::wallet_of(&mut conn, server.globex).unwrap();
    server
        .ledger
        .submit_blocking(Command::Grant {
            id: TransferId::new("grant-globex").unwrap(),
            account: wallet,
            source: GrantSource::Promotion,
            amount: Credits::from_whole(10).unwrap(),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })
        .unwrap();
    let (status, body) = server.search(&server.globex_key, r#"{"limit": 5}"#);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "plugin_misconfigured");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no CSV file is uploaded")
    );
}

#[test]
fn concurrent_retries_with_one_idempotency_key_run_and_charge_once() {
    let server = start();
    let answers: Vec<(u16, serde_json::Value, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| server.search_once("order-42", r#"{"limit": 10}"#)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let first = &answers[0].1;
    assert_eq!(answers[0].0, 200, "{first}");
    for (status, body, _) in &answers {
        assert_eq!(
            (*status, body),
            (200, first),
            "every retry gets the first answer"
        );
    }
    assert_eq!(
        answers.iter().filter(|(_, _, replayed)| !replayed).count(),
        1
    );
    assert_eq!(
        server.ledger(),
        (
            Credits::from_whole(90).unwrap(),
            Credits::ZERO,
            Credits::from_whole(10).unwrap()
        )
    );
    let mut conn = server.database.get().unwrap();
    assert_eq!(
        tollgate::metering::records(&mut conn, server.acme, 100)
            .unwrap()
            .len(),
        1
    );

    // The key with another request is refused, and moves nothing.
    let (status, body, _) = server.search_once("order-42", r#"{"limit": 11}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(server.ledger().0, Credits::from_whole(90).unwrap());
}

#[test]
fn a_request_refused_before_it_ran_can_be_retried_with_its_key() {
    let server = start();
    // 100 credits cannot hold a 200-lead search.
    let (status, body, _) = server.search_once("big-1", r#"{"limit": 200}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (402, Some("insufficient_credits"))
    );
    let mut conn = server.database.get().unwrap();
    let wallet = queries::wallet_of(&mut conn, server.acme).unwrap();
    server
        .ledger
        .submit_blocking(Command::Grant {
            id: TransferId::new("top-up").unwrap(),
            account: wallet,
            source: GrantSource::Purchase,
            amount: Credits::from_whole(200).unwrap(),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })
        .unwrap();
    let (status, body, replayed) = server.search_once("big-1", r#"{"limit": 200}"#);
    assert_eq!((status, replayed), (200, false), "{body}");
    assert_eq!(body["charged"], "200");
}

#[test]
fn typed_endpoints_usage_and_transactions() {
    let server = start();
    let key = server.acme_key.clone();
    let (status, body) = server.post(
        Some(&key),
        "/leads/search",
        r#"{"plugin": "csv-leads", "limit": 5}"#,
    );
    assert_eq!(
        (status, body["charged"].as_str()),
        (200, Some("5")),
        "{body}"
    );
    assert_eq!(body["result"]["leads"].as_array().unwrap().len(), 5);
    let (status, _) = server.post(
        Some(&key),
        "/plugins/csv-leads/invoke/search",
        r#"{"limit": 7}"#,
    );
    assert_eq!(status, 200);
    let (status, body) = server.post(Some(&key), "/leads/search", r#"{"limit": 5}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_input"))
    );
    let (status, body) = server.post(Some(&key), "/messages", r#"{"plugin": "csv-leads"}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_function"))
    );

    let (status, body) = server.get(&key, "/usage");
    assert_eq!(status, 200, "{body}");
    let usage = body["usage"].as_array().unwrap();
    assert_eq!(usage.len(), 1, "{body}");
    assert_eq!(
        (
            &usage[0]["plugin"],
            &usage[0]["function"],
            &usage[0]["calls"],
            &usage[0]["units"],
            &usage[0]["charged"]
        ),
        (
            &"csv-leads".into(),
            &"search".into(),
            &2.into(),
            &12.into(),
            &"12".into()
        )
    );

    // Records, newest first, a page at a time.
    let (_, page) = server.get(&key, "/usage/records?limit=1");
    assert_eq!(page["records"][0]["units"], 7);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = server.get(&key, &format!("/usage/records?limit=1&before={cursor}"));
    assert_eq!(page["records"][0]["units"], 5);
    assert_eq!(page["next_cursor"], serde_json::Value::Null);

    // The wallet's transfers: the grant, then each call's hold and post.
    let (_, page) = server.get(&key, "/billing/credits/transactions");
    let kinds: Vec<(&str, &str)> = page["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["kind"].as_str().unwrap(),
                entry["amount"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds.last(), Some(&("grant", "100")), "{page}");
    assert!(kinds.contains(&("post", "-7")), "{kinds:?}");
    // Narrowed by kind and time.
    let (_, page) = server.get(&key, "/billing/credits/transactions?kind=post,grant");
    let kinds: Vec<&str> = page["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["post", "post", "grant"]);
    let (_, page) = server.get(
        &key,
        "/billing/credits/transactions?kind=hold&to=2000-01-01T00:00:00Z",
    );
    assert_eq!(page["transactions"].as_array().unwrap().len(), 0);
    let (_, page) = server.get(
        &key,
        "/billing/credits/transactions?kind=hold&from=2000-01-01T00:00:00Z",
    );
    assert_eq!(page["transactions"].as_array().unwrap().len(), 2);
    let (_, body) = server.get(&key, "/billing/credits");
    assert_eq!(body["balance"]["posted"], "88");
    assert_eq!(body["grants"][0]["remaining"], "88");

    for (path, message) in [
        ("/usage?from=yesterday", "from must be a date as YYYY-MM-DD"),
        (
            "/usage?from=2026-02-01&to=2026-01-01",
            "from must not be after to",
        ),
        ("/usage/records?limit=0", "limit must be 1 to 500"),
        (
            "/usage/records?before=xyz",
            "before must be the next_cursor of an earlier page",
        ),
        ("/usage/records?page=2", "unknown parameter \"page\""),
        (
            "/billing/credits/transactions?kind=refund",
            "kind \"refund\" is not one of",
        ),
        (
            "/billing/credits/transactions?from=monday",
            "from must be an RFC 3339 time",
        ),
    ] {
        let (status, body) = server.get(&key, path);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{path}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{path}: {body}"
        );
    }
}

#[test]
fn tenants_keys_plugins_and_grants_keep_to_their_roles_and_tenants() {
    let server = start();
    let (acme, member, globex, operator) = (
        server.acme.0,
        server.acme_key.as_str(),
        server.globex_key.as_str(),
        server.operator_key.as_str(),
    );
    let code = |(status, body): (u16, serde_json::Value)| {
        (status, body["error"]["code"].as_str().map(str::to_owned))
    };
    let forbidden = (403, Some("forbidden".to_owned()));
    let not_found = (404, Some("not_found".to_owned()));

    // The operator makes tenants and their first keys; tenants cannot.
    let (status, tenant) = server.call(
        "POST",
        operator,
        "/tenants",
        Some(r#"{"name": "Initech", "credit_limit": "50"}"#),
        &[],
    );
    assert_eq!(status, 201, "{tenant}");
    let initech = tenant["id"].as_i64().unwrap();
    let (status, key) = server.call(
        "POST",
        operator,
        &format!("/tenants/{initech}/keys"),
        Some(r#"{"role": "admin", "name": "first"}"#),
        &[],
    );
    assert_eq!(status, 201, "{key}");
    assert!(key["key"].as_str().unwrap().starts_with("tg_"));
    let (_, tenants) = server.call("GET", operator, "/tenants", None, &[]);
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 3);
    assert_eq!(
        code(server.call("POST", member, "/tenants", Some(r#"{"name": "x"}"#), &[])),
        forbidden
    );
    assert_eq!(
        code(server.call("GET", globex, "/tenants", None, &[])),
        forbidden
    );
    assert_eq!(
        code(server.call("POST", operator, "/tenants", Some(r#"{"name": " "}"#), &[])),
        (400, Some("invalid_input".to_owned()))
    );

    // Another tenant's keys are not found; a member manages none.
    assert_eq!(
        code(server.call("GET", globex, &format!("/tenants/{acme}/keys"), None, &[])),
        not_found
    );
    assert_eq!(
        code(server.call(
            "POST",
            globex,
            &format!("/tenants/{acme}/keys"),
            Some(r#"{"role": "admin", "name": "x"}"#),
            &[]
        )),
        not_found
    );
    assert_eq!(
        code(server.call(
            "DELETE",
            globex,
            &format!("/tenants/{acme}/keys/1"),
            None,
            &[]
        )),
        not_found
    );
    assert_eq!(
        code(server.call("GET", member, &format!("/tenants/{acme}/keys"), None, &[])),
        forbidden
    );
    let globex_id = server.globex.0;
    let (status, keys) = server.call(
        "GET",
        globex,
        &format!("/tenants/{globex_id}/keys"),
        None,
        &[],
    );
    assert_eq!((status, keys["keys"].as_array().unwrap().len()), (200, 1));
    assert!(
        keys["keys"][0].get("key").is_none(),
        "a key is never shown again"
    );
    // An admin cannot revoke a key of another tenant through its own path.
    let acme_key_id = 1;
    assert_eq!(
        code(server.call(
            "DELETE",
            globex,
            &format!("/tenants/{globex_id}/keys/{acme_key_id}"),
            None,
            &[]
        )),
        (404, Some("not_found".to_owned()))
    );

    // Plugins: listed to all, enabled by a tenant's admin.
    let (_, listed) = server.call("GET", member, "/plugins", None, &[]);
    let enabled: BTreeMap<String, bool> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| {
            (
                plugin["name"].as_str().unwrap().to_owned(),
                plugin["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        enabled,
        BTreeMap::from([
            ("bank-transfer".to_owned(), false),
            ("csv-leads".to_owned(), true),
            ("http-leads".to_owned(), false)
        ])
    );
    let enable = "/plugins/http-leads/enablement";
    assert_eq!(
        code(server.call(
            "PUT",
            member,
            enable,
            Some(r#"{"settings": {"api_key": "k"}}"#),
            &[]
        )),
        forbidden
    );
    assert_eq!(
        code(server.call("PUT", globex, enable, Some(r#"{"settings": {}}"#), &[])),
        (422, Some("missing_setting".to_owned()))
    );
    assert_eq!(
        code(server.call(
            "PUT",
            globex,
            enable,
            Some(r#"{"settings": {"api_key": "k", "colour": "red"}}"#),
            &[]
        )),
        (422, Some("invalid_setting".to_owned()))
    );
    assert_eq!(
        code(server.call(
            "PUT",
            globex,
            "/plugins/nope/enablement",
            Some(r#"{"settings": {}}"#),
            &[]
        )),
        (404, Some("unknown_plugin".to_owned()))
    );
    let (status, _) = server.call(
        "PUT",
        globex,
        enable,
        Some(r#"{"settings": {"api_key": "k"}}"#),
        &[],
    );
    assert_eq!(status, 200);
    let (_, listed) = server.call("GET", globex, "/plugins", None, &[]);
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|plugin| plugin["name"] == "http-leads" && plugin["enabled"] == true)
    );
    // Settings saved again without the secret keep it (a form never shows
    // it back); the listing shows plain values, and of a secret only that
    // it is set.
    let (status, answer) = server.call(
        "PUT",
        globex,
        enable,
        Some(r#"{"settings": {"api_base_url": "https://api.apollo.io"}}"#),
        &[],
    );
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = server.call("GET", globex, "/plugins", None, &[]);
    let http_leads = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["name"] == "http-leads")
        .unwrap()
        .clone();
    let setting = |name: &str| {
        http_leads["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|setting| setting["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(setting("api_key")["set"], true);
    assert_eq!(setting("api_key")["value"], serde_json::Value::Null);
    assert!(!listed.to_string().contains(r#""k""#), "{listed}");
    assert_eq!(setting("api_base_url")["value"], "https://api.apollo.io");
    // Acme's view did not change.
    let (_, listed) = server.call("GET", member, "/plugins", None, &[]);
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|plugin| plugin["name"] == "http-leads" && plugin["enabled"] == false)
    );
    assert_eq!(server.call("DELETE", globex, enable, None, &[]).0, 200);
    assert_eq!(
        code(server.call("DELETE", globex, enable, None, &[])),
        not_found
    );

    // Grants: the operator's, once per Idempotency-Key.
    let grant = format!(r#"{{"tenant": {globex_id}, "amount": "40", "source": "promotion"}}"#);
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/billing/credits/grants",
            Some(&grant),
            &[]
        )),
        (400, Some("missing_idempotency_key".to_owned()))
    );
    assert_eq!(
        code(server.call(
            "POST",
            globex,
            "/billing/credits/grants",
            Some(&grant),
            &[("idempotency-key", "g1")]
        )),
        forbidden
    );
    let (status, body) = server.call(
        "POST",
        operator,
        "/billing/credits/grants",
        Some(&grant),
        &[("idempotency-key", "g1")],
    );
    assert_eq!(
        (status, body["amount"].as_str()),
        (201, Some("40")),
        "{body}"
    );
    let (status, body) = server.call(
        "POST",
        operator,
        "/billing/credits/grants",
        Some(&grant),
        &[("idempotency-key", "g1")],
    );
    assert_eq!((status, body["replayed"].as_bool()), (200, Some(true)));
    let other = format!(r#"{{"tenant": {globex_id}, "amount": "41", "source": "promotion"}}"#);
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/billing/credits/grants",
            Some(&other),
            &[("idempotency-key", "g1")]
        )),
        (422, Some("idempotency_key_reused".to_owned()))
    );
    let bad = format!(r#"{{"tenant": {globex_id}, "amount": "40", "source": "gift"}}"#);
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/billing/credits/grants",
            Some(&bad),
            &[("idempotency-key", "g2")]
        )),
        (400, Some("invalid_input".to_owned()))
    );
    let missing = r#"{"tenant": 999, "amount": "40", "source": "promotion"}"#;
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/billing/credits/grants",
            Some(missing),
            &[("idempotency-key", "g3")]
        )),
        not_found
    );
    let (_, balance) = server.call("GET", globex, "/billing/credits", None, &[]);
    assert_eq!(balance["balance"]["posted"], "40");
    // The operator acts for no tenant.
    assert_eq!(
        code(server.call("GET", operator, "/billing/credits", None, &[])),
        forbidden
    );
}

#[test]
fn metrics_count_calls_charges_and_refusals() {
    let server = start();
    assert_eq!(server.search(&server.acme_key, r#"{"limit": 60}"#).0, 200);
    assert_eq!(server.search(&server.acme_key, r#"{"limit": 60}"#).0, 402);
    let root = server.base.trim_end_matches("/api/v1");
    let mut response = server.http.get(&format!("{root}/metrics")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.body_mut().read_to_string().unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert!(
        value(
            "tollgate_plugin_calls_total{plugin=\"csv-leads\",function=\"search\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert!(value("tollgate_credits_charged_micros_total{plugin=\"csv-leads\"}") >= 60_000_000.0);
    assert!(value("tollgate_calls_refused_total{reason=\"insufficient_credits\"}") >= 1.0);
    assert!(value("tollgate_plugin_call_seconds_count{plugin=\"csv-leads\"}") >= 1.0);
    for probe in ["/healthz", "/readyz"] {
        let response = server.http.get(&format!("{root}{probe}")).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{probe}");
    }
}

#[test]
fn a_tenant_over_its_rate_gets_429_and_others_do_not() {
    // One request an hour, three at once.
    let server = start_with_rate_limits(
        governor::Quota::per_hour(std::num::NonZeroU32::new(1).unwrap())
            .allow_burst(std::num::NonZeroU32::new(3).unwrap()),
    );
    let statuses: Vec<u16> = (0..5)
        .map(|_| server.get(&server.acme_key, "/billing/credits").0)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let response = server
        .http
        .get(&format!("{}/billing/credits", server.base))
        .header("authorization", &format!("Bearer {}", server.acme_key))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    // Another tenant has its own allowance.
    assert_eq!(server.get(&server.globex_key, "/billing/credits").0, 200);
    // Providers' notifications, which carry no key, share one.
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            server
                .call(
                    "POST",
                    "",
                    "/billing/providers/bank-transfer/notifications",
                    Some("status=succeeded"),
                    &[],
                )
                .0
        })
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429]);
}

#[test]
fn the_openapi_document_describes_exactly_the_operations_served() {
    let server = start();
    let mut response = server
        .http
        .get(&format!("{}/openapi.json", server.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let document: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|key| *key != "parameters")
        {
            let operation = &item[method];
            assert!(operation["operationId"].is_string(), "{method} {path}");
            assert!(operation["responses"].is_object(), "{method} {path}");
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = api::v1::OPERATIONS
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // Each is routed: without a key, each answers 401 in the API's shape,
    // where a path or method the router lacks would answer 404 or 405.
    for (method, path) in &served {
        let path = path
            .replace("{plugin}", "csv-leads")
            .replace("{function}", "search")
            .replace("{tenant}", "1")
            .replace("{key}", "1")
            .replace("{id}", "1")
            .replace("{provider}", "bank-transfer")
            .replace("{token}", "t1-0123456789abcdef0123456789abcdef")
            .replace("{enrollment}", "1");
        let request = ureq::http::Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(format!("{}{path}", server.base))
            .body(String::new())
            .unwrap();
        let mut response = server.http.run(request).unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(status, 401, "{method} {path}: {body}");
        // Providers' notifications and channels' callbacks take no key:
        // their signature is checked.
        let code = match path.ends_with("/notifications") || path.contains("/callbacks/") {
            true => "\"invalid_signature\"",
            false => "\"unauthorized\"",
        };
        assert!(body.contains(code), "{method} {path}: {body}");
    }
}

#[test]
fn fifty_concurrent_clients_spend_exactly_the_balance() {
    // 100 credits cover exactly ten searches of 10 leads.
    let server = start();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|_| scope.spawn(|| server.search(&server.acme_key, r#"{"limit": 10}"#).0))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 10);
    assert_eq!(statuses.iter().filter(|status| **status == 402).count(), 40);
    assert_eq!(
        server.ledger(),
        (
            Credits::ZERO,
            Credits::ZERO,
            Credits::from_whole(100).unwrap()
        )
    );
    let mut conn = server.database.get().unwrap();
    let records = tollgate::metering::records(&mut conn, server.acme, 100).unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(
        records.iter().map(|record| record.credits).sum::<i64>(),
        100_000_000
    );
}

#[test]
fn the_operator_installs_and_upgrades_plugins_over_the_api() {
    use base64::Engine as _;
    let server = start();
    let plugins_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let manifest =
        |name: &str| std::fs::read_to_string(plugins_dir.join(name).join("plugin.toml")).unwrap();
    let wasm = |name: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(tollgate::runtime::artifacts::path(name).unwrap()).unwrap())
    };
    let body = |manifest: &str, wasm: &str| {
        serde_json::json!({ "manifest": manifest, "wasm_base64": wasm, "approved_hosts": ["api.apollo.io"] }).to_string()
    };
    let operator = server.operator_key.as_str();
    let code = |(status, body): (u16, serde_json::Value)| {
        (status, body["error"]["code"].as_str().map(str::to_owned))
    };

    let noop = body(&manifest("fixture-noop"), &wasm("fixture-noop"));
    assert_eq!(
        code(server.call("POST", &server.globex_key, "/plugins", Some(&noop), &[])),
        (403, Some("forbidden".to_owned()))
    );
    let (status, installed) = server.call("POST", operator, "/plugins", Some(&noop), &[]);
    assert_eq!(
        (status, installed["name"].as_str()),
        (201, Some("fixture-noop")),
        "{installed}"
    );
    let not_wasm = body(
        &manifest("fixture-noop"),
        &base64::engine::general_purpose::STANDARD.encode(b"not a component"),
    );
    assert_eq!(
        code(server.call("POST", operator, "/plugins", Some(&not_wasm), &[])),
        (422, Some("not_a_component".to_owned()))
    );
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/plugins",
            Some(r#"{"manifest": "", "wasm_base64": "%%%"}"#),
            &[]
        )),
        (400, Some("invalid_input".to_owned()))
    );
    let wrong_kind = body(
        &manifest("fixture-noop").replace("pricing-rule", "lead-source"),
        &wasm("fixture-noop"),
    );
    assert_eq!(
        code(server.call("POST", operator, "/plugins", Some(&wrong_kind), &[])),
        (422, Some("wrong_world".to_owned()))
    );

    // An upgrade must be newer, and of the plugin named.
    let same = body(&manifest("http-leads"), &wasm("http-leads"));
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/plugins/http-leads/versions",
            Some(&same),
            &[]
        )),
        (422, Some("not_newer".to_owned()))
    );
    let newer = body(
        &manifest("http-leads").replace("version = \"0.1.0\"", "version = \"0.2.0\""),
        &wasm("http-leads"),
    );
    assert_eq!(
        code(server.call(
            "POST",
            operator,
            "/plugins/csv-leads/versions",
            Some(&newer),
            &[]
        )),
        (400, Some("invalid_input".to_owned()))
    );
    let (status, upgraded) = server.call(
        "POST",
        operator,
        "/plugins/http-leads/versions",
        Some(&newer),
        &[],
    );
    assert_eq!(
        (status, upgraded["version"].as_str()),
        (201, Some("0.2.0")),
        "{upgraded}"
    );
    let (_, listed) = server.call("GET", &server.acme_key, "/plugins", None, &[]);
    let versions: BTreeMap<String, String> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| {
            (
                plugin["name"].as_str().unwrap().to_owned(),
                plugin["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(versions["http-leads"], "0.2.0");
    assert_eq!(versions["fixture-noop"], "0.1.0");
}

#[test]
fn nothing_of_one_tenant_shows_in_any_answer_to_another() {
    let server = start();
    // Acme makes calls, so it has records, transfers and a key of its own.
    let mut acme_marks: Vec<String> = Vec::new();
    for _ in 0..2 {
        let (status, body) = server.search(&server.acme_key, r#"{"limit": 3}"#);
        assert_eq!(status, 200);
        acme_marks.push(body["call_id"].as_str().unwrap().to_owned());
    }
    acme_marks.push("grant-acme".to_owned());
    acme_marks.push(server.acme_key[..11].to_owned());
    acme_marks.push("lead1@example.com".to_owned());
    acme_marks.push("Starter plan, November".to_owned());
    acme_marks.push("ada@acme-lead.example".to_owned());
    acme_marks.push("Acme secret subject".to_owned());
    acme_marks.push("Call Ada about Acme".to_owned());
    acme_marks.push("sales@acme.example".to_owned());
    acme_marks.push("Acme secret deal".to_owned());
    acme_marks.push("Acme sales".to_owned());
    // Every read Globex may make, over every GET operation of the API.
    let mut read = 0;
    for (method, path) in api::v1::OPERATIONS {
        if method != "get" {
            continue;
        }
        // A document path names Acme's document, which Globex cannot see.
        let path = server.concrete(path, server.globex);
        let (status, body) = server.call("GET", &server.globex_key, &path, None, &[]);
        // The operator's lists are refused; everything else answers.
        let expected = match path.as_str() {
            "/tenants" | "/billing/revenue" | "/billing/reports/monthly" | "/analytics/usage" => {
                403
            }
            _ if path.starts_with("/resellers") => 403,
            _ if path.contains("invoices/")
                || path.contains("credit-notes/")
                || path.contains("receipts/")
                || path.starts_with("/leads/") && path != "/leads/scoring"
                || path.starts_with("/sequences/")
                || path.starts_with("/pipelines/")
                || path.starts_with("/deals/") =>
            {
                404
            }
            _ => 200,
        };
        assert_eq!(status, expected, "GET {path}: {body}");
        let text = body.to_string();
        for mark in &acme_marks {
            assert!(
                !text.contains(mark.as_str()),
                "GET {path} shows Acme's {mark}: {text}"
            );
        }
        read += 1;
    }
    assert!(read >= 6);
    // And Acme's own answers do show them, so the check can fail.
    let (_, records) = server.call("GET", &server.acme_key, "/usage/records", None, &[]);
    assert!(records.to_string().contains(&acme_marks[0]));
    // Globex cannot act on Acme's keys either.
    let acme = server.acme.0;
    for (method, path) in [
        ("GET", format!("/tenants/{acme}/keys")),
        ("DELETE", format!("/tenants/{acme}/keys/1")),
        ("GET", format!("/tenants/{acme}/contact")),
        ("PUT", format!("/tenants/{acme}/contact")),
    ] {
        let (status, _) = server.call(method, &server.globex_key, &path, None, &[]);
        assert_eq!(status, 404, "{method} {path}");
    }
}

#[test]
fn no_write_of_one_tenant_reaches_another() {
    let server = start();
    let (acme, globex) = (server.acme.0, server.globex.0);
    // Acme's state, as Acme reads it over every GET it may make.
    let acme_view = || -> BTreeMap<String, serde_json::Value> {
        api::v1::OPERATIONS
            .iter()
            .filter(|(method, path)| *method == "get" && *path != "/tenants")
            .map(|(_, path)| {
                let path = server.concrete(path, server.acme);
                let (status, body) = server.call("GET", &server.acme_key, &path, None, &[]);
                let allowed = match path.as_str() {
                    _ if path.ends_with("/keys") || path.ends_with("/contact") => 403,
                    _ if path.starts_with("/resellers") => 403,
                    "/billing/revenue" | "/billing/reports/monthly" | "/analytics/usage" => 403,
                    _ if path.contains("/receipts/") => 404,
                    _ => 200,
                };
                assert_eq!(status, allowed, "GET {path}: {body}");
                // An export says when it was made.
                let mut body = body;
                if path.ends_with("/export") {
                    body["exported_at"] = serde_json::Value::Null;
                }
                (path, body)
            })
            .collect()
    };
    let (status, first) = server.call(
        "POST",
        &server.acme_key,
        "/plugins/csv-leads/invoke/search",
        Some(r#"{"limit": 2}"#),
        &[("idempotency-key", "shared-key")],
    );
    assert_eq!(status, 200, "{first}");
    let acme_call = first["call_id"].as_str().unwrap().to_owned();
    let before = acme_view();
    let grant = format!(r#"{{"tenant": {globex}, "amount": "50", "source": "promotion"}}"#);
    let (status, _) = server.call(
        "POST",
        &server.operator_key,
        "/billing/credits/grants",
        Some(&grant),
        &[("idempotency-key", "globex-grant")],
    );
    assert_eq!(status, 201);

    // Every write Globex's admin may attempt, aimed at Acme's objects where
    // a path names one.
    let acme_key_id = 1;
    let search = r#"{"limit": 2}"#;
    let acme_method = server.acme_method;
    let pay_with_acme_method = format!(r#"{{"payment_method": {acme_method}}}"#);
    let enroll_acme_lead = format!(r#"{{"leads": [{}]}}"#, server.acme_lead);
    let deal_in_acme_pipeline = format!(
        r#"{{"pipeline": {}, "title": "Stolen", "lead": {}}}"#,
        server.acme_pipeline, server.acme_lead
    );
    let mut first_write = true;
    for (method, path) in api::v1::OPERATIONS {
        if method == "get" {
            continue;
        }
        let (path, body, allowed): (String, Option<&str>, &[u16]) = match path {
            "/plugins/{plugin}/invoke/{function}" => (
                "/plugins/csv-leads/invoke/search".into(),
                Some(search),
                // Globex's own call, over its own store, which holds no CSV
                // file: Acme's is not in reach.
                &[409],
            ),
            "/leads/search" => (
                path.into(),
                Some(r#"{"plugin": "csv-leads", "limit": 2}"#),
                &[409],
            ),
            "/leads/enrich" => (
                path.into(),
                Some(
                    r#"{"plugin": "csv-leads", "email": "lead1@example.com", "custom_fields": []}"#,
                ),
                &[409],
            ),
            "/messages" => (
                path.into(),
                Some(r#"{"plugin": "csv-leads", "to": "lead1@example.com"}"#),
                &[400, 404],
            ),
            "/billing/credits/grants" => (
                path.into(),
                Some(r#"{"tenant": 1, "amount": "1000", "source": "promotion"}"#),
                &[403],
            ),
            "/tenants" => (path.into(), Some(r#"{"name": "Evil"}"#), &[403]),
            "/tenants/{tenant}/keys" => (
                format!("/tenants/{acme}/keys"),
                Some(r#"{"role": "admin", "name": "stolen"}"#),
                &[404],
            ),
            "/tenants/{tenant}/keys/{key}" => {
                (format!("/tenants/{acme}/keys/{acme_key_id}"), None, &[404])
            }
            "/tenants/{tenant}/contact" => (
                format!("/tenants/{acme}/contact"),
                Some(r#"{"email": "spy@globex.example"}"#),
                &[404],
            ),
            "/plugins" | "/plugins/{plugin}/versions" => (
                path.replace("{plugin}", "csv-leads"),
                Some(r#"{"manifest": "", "wasm_base64": ""}"#),
                &[403],
            ),
            "/billing/invoices/{id}/payments" => (
                format!("/billing/invoices/{}/payments", server.acme_invoice),
                Some(r#"{"tenant": 1}"#),
                &[403],
            ),
            // Globex's own subscription: Acme has none, and keeps none.
            "/billing/subscriptions" => (
                path.into(),
                (method == "post").then_some(r#"{"plan": "starter"}"#),
                if method == "post" { &[201] } else { &[200] },
            ),
            // Acme's invoice, with Acme's payment method.
            "/billing/invoices/{id}/pay" => (
                format!("/billing/invoices/{}/pay", server.acme_invoice),
                Some(&pay_with_acme_method),
                &[404],
            ),
            // Globex's own payment method.
            "/billing/payment-methods" => (
                path.into(),
                Some(r#"{"provider": "bank-transfer", "method": "bank_transfer"}"#),
                &[201],
            ),
            "/billing/payments/{id}/refund" => (
                "/billing/payments/1/refund".into(),
                Some(r#"{"tenant": 1}"#),
                &[403],
            ),
            "/billing/payment-methods/{id}" => (
                format!("/billing/payment-methods/{acme_method}"),
                None,
                &[404],
            ),
            // Unsigned: refused whoever sends it.
            "/billing/providers/{provider}/notifications" => (
                "/billing/providers/bank-transfer/notifications".into(),
                Some("event_id=e1&reference=BT-1&status=succeeded"),
                &[401],
            ),
            // Globex's own purchase.
            "/billing/purchases" => (path.into(), Some(r#"{"package": "pack-500"}"#), &[201]),
            // Globex's own lead, with the address of Acme's: another lead.
            "/leads" => (
                path.into(),
                Some(r#"{"email": "Ada@acme-lead.example", "title": "Spy"}"#),
                &[201],
            ),
            "/leads/import" => (
                path.into(),
                Some(r#"{"csv": "email,title\nada@acme-lead.example,Mole\n"}"#),
                &[200],
            ),
            "/leads/import/mapping" => (path.into(), Some(r#"{"columns": ["Email"]}"#), &[200]),
            // A tenant's key is no reseller's, and suspends no one.
            "/resellers/{id}/pricing"
            | "/resellers/{id}/alerts"
            | "/resellers/{id}/branding"
            | "/resellers/{id}/approvals"
            | "/resellers/{id}/plugins"
            | "/resellers/{id}/invoices"
            | "/resellers/{id}/purchases" => (
                path.replace("{id}", "1"),
                Some(r#"{"name": "Spy"}"#),
                &[403],
            ),
            "/tenants/{tenant}/suspension" => (format!("/tenants/{acme}/suspension"), None, &[403]),
            // A tenant's key is no reseller's.
            "/resellers" | "/resellers/{id}/tenants" => (
                path.replace("{id}", "1"),
                Some(r#"{"name": "Spy"}"#),
                &[403],
            ),
            "/leads/scoring" => (
                path.into(),
                Some(r#"{"rules": [{"field": "title", "contains": "spy", "points": 9}]}"#),
                &[200],
            ),
            // Globex's own mailbox, sequence and task; Acme's by their ids.
            "/mailboxes" => (
                path.into(),
                Some(r#"{"plugin": "csv-leads", "address": "spy@globex.example"}"#),
                &[422],
            ),
            "/sequences" => (
                path.into(),
                Some(r#"{"name": "Spy", "steps": [{"kind": "wait", "business_days": 1}]}"#),
                &[201],
            ),
            "/sequences/{id}" => (
                format!("/sequences/{}", server.acme_sequence),
                Some(r#"{"name": "Spy", "steps": [{"kind": "wait", "business_days": 1}]}"#),
                &[404],
            ),
            "/sequences/{id}/enrollments/{enrollment}" => (
                format!(
                    "/sequences/{}/enrollments/{}",
                    server.acme_sequence, server.acme_enrollment
                ),
                None,
                &[404],
            ),
            "/sequences/{id}/enrollments" => (
                format!("/sequences/{}/enrollments", server.acme_sequence),
                Some(&enroll_acme_lead),
                &[404],
            ),
            "/tasks" => (path.into(), Some(r#"{"title": "Spy on Acme"}"#), &[201]),
            "/tasks/{id}" => (
                format!("/tasks/{}", server.acme_task),
                Some(r#"{"status": "done"}"#),
                &[404],
            ),
            // Acme's callback URL, with a token Globex cannot sign.
            "/channels/{plugin}/callbacks/{token}" => (
                format!("/channels/email/callbacks/t{acme}-0123456789abcdef0123456789abcdef"),
                Some("From: x@y.z\r\n\r\nhello"),
                &[401],
            ),
            "/pipelines" => (
                path.into(),
                Some(r#"{"name": "Spy", "stages": [{"name": "Watching"}]}"#),
                &[201],
            ),
            "/pipelines/{id}" => (
                format!("/pipelines/{}", server.acme_pipeline),
                Some(r#"{"name": "Spy", "stages": [{"name": "Watching"}]}"#),
                &[404],
            ),
            // A deal in Acme's pipeline, or for Acme's lead: neither found.
            "/deals" => (path.into(), Some(&deal_in_acme_pipeline), &[404]),
            "/deals/{id}" => (
                format!("/deals/{}", server.acme_deal),
                Some(r#"{"title": "Stolen"}"#),
                &[404],
            ),
            "/deals/{id}/move" => (
                format!("/deals/{}/move", server.acme_deal),
                Some(r#"{"stage": 1, "position": 0}"#),
                &[404],
            ),
            // Acme's lead, by its id.
            "/leads/{id}" | "/leads/{id}/do-not-contact" => (
                path.replace("{id}", &server.acme_lead.to_string()),
                (method == "patch").then_some(r#"{"title": "Spy"}"#),
                &[404],
            ),
            "/billing/subscriptions/plan" => {
                (path.into(), Some(r#"{"plan": "professional"}"#), &[200])
            }
            // Globex's own enablement: Acme's stays as it was.
            "/plugins/{plugin}/enablement" => (
                "/plugins/csv-leads/enablement".into(),
                (method == "put").then_some(r#"{"settings": {}}"#),
                &[200],
            ),
            other => panic!("the matrix does not cover {method} {other}: add it"),
        };
        // The first write reuses the key Acme used: Globex's keys are its
        // own, so it runs instead of answering with Acme's response. The
        // rest use keys of their own (a key names one request).
        let idempotency_key = match first_write {
            true => "shared-key".to_owned(),
            false => format!("globex {method} {path}"),
        };
        first_write = false;
        let (status, answer) = server.call(
            &method.to_uppercase(),
            &server.globex_key,
            &path,
            body,
            &[("idempotency-key", &idempotency_key)],
        );
        assert!(
            allowed.contains(&status),
            "{method} {path}: {status} {answer}"
        );
        let text = answer.to_string();
        assert!(
            !text.contains(&acme_call) && !text.contains("lead1@example.com"),
            "{method} {path} answered with Acme's data: {text}"
        );
    }
    // Globex disabled csv-leads last: its next call is refused at once,
    // and Acme's calls go on.
    let (status, refused) = server.search(&server.globex_key, search);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("plugin_not_enabled"))
    );
    let after = acme_view();
    assert_eq!(before, after, "a write of Globex changed what Acme sees");
    let (status, replay) = server.call(
        "POST",
        &server.acme_key,
        "/plugins/csv-leads/invoke/search",
        Some(r#"{"limit": 2}"#),
        &[("idempotency-key", "shared-key")],
    );
    assert_eq!((status, &replay), (200, &first), "Acme's replay is its own");
}

#[test]
fn a_key_revoked_through_the_api_stops_working_at_once() {
    let server = start();
    let globex = server.globex.0;
    let (status, created) = server.call(
        "POST",
        &server.globex_key,
        &format!("/tenants/{globex}/keys"),
        Some(r#"{"role": "member", "name": "short-lived"}"#),
        &[],
    );
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    // Used once, so the host has it cached.
    assert_eq!(server.get(key, "/billing/credits").0, 200);
    let id = created["id"].as_i64().unwrap();
    let (status, _) = server.call(
        "DELETE",
        &server.globex_key,
        &format!("/tenants/{globex}/keys/{id}"),
        None,
        &[],
    );
    assert_eq!(status, 204);
    let (status, body) = server.get(key, "/billing/credits");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}
