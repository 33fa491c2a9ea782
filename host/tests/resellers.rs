//! White-label resellers, their tenants and keys, through the API: the
//! operator creates resellers; a reseller creates and lists its own tenants
//! and manages their keys; no reseller sees another's, and a reseller's key
//! reads no tenant's data.

mod api_server;

use serde_json::Value;
use tollgate::api;

use api_server::Server;

fn call(server: &Server, key: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    server.call(method, key, path, body, &[])
}

fn reseller_key(server: &Server, reseller: i64) -> String {
    let (status, key) = call(
        server,
        &server.operator_key,
        "POST",
        &format!("/tenants/{reseller}/keys"),
        Some(r#"{"role": "reseller", "name": "agency"}"#),
    );
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

#[test]
fn resellers_manage_their_own_tenants_and_see_no_one_elses() {
    let server = api_server::start();
    let operator = server.operator_key.clone();
    let mut resellers = Vec::new();
    for name in ["North Agency", "South Agency"] {
        let body = format!(r#"{{"name": "{name}", "credit_limit": "500"}}"#);
        let (status, created) = call(&server, &operator, "POST", "/resellers", Some(&body));
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["kind"], "reseller");
        resellers.push(created["id"].as_i64().unwrap());
    }
    let (north, south) = (resellers[0], resellers[1]);
    let (north_key, south_key) = (reseller_key(&server, north), reseller_key(&server, south));

    // Roles go with kinds: no admin key for a reseller, no reseller key for
    // a tenant.
    let (status, refused) = call(
        &server,
        &operator,
        "POST",
        &format!("/tenants/{north}/keys"),
        Some(r#"{"role": "admin", "name": "x"}"#),
    );
    assert_eq!(status, 400, "{refused}");
    let (status, refused) = call(
        &server,
        &operator,
        "POST",
        &format!("/tenants/{}/keys", server.acme.0),
        Some(r#"{"role": "reseller", "name": "x"}"#),
    );
    assert_eq!(status, 400, "{refused}");

    // North makes three tenants, and lists exactly those.
    let mut north_tenants = Vec::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let body = format!(r#"{{"name": "{name}"}}"#);
        let (status, tenant) = call(
            &server,
            &north_key,
            "POST",
            &format!("/resellers/{north}/tenants"),
            Some(&body),
        );
        assert_eq!(status, 201, "{tenant}");
        assert_eq!(tenant["parent"], north);
        assert_eq!(tenant["kind"], "tenant");
        north_tenants.push(tenant["id"].as_i64().unwrap());
    }
    let (status, listed) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/tenants"),
        None,
    );
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<i64> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, north_tenants);
    let (_, own) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}"),
        None,
    );
    assert_eq!(own["name"], "North Agency");

    // North makes an admin key for its tenant, which works as that tenant.
    let alpha = north_tenants[0];
    let (status, key) = call(
        &server,
        &north_key,
        "POST",
        &format!("/tenants/{alpha}/keys"),
        Some(r#"{"role": "admin", "name": "alpha admin"}"#),
    );
    assert_eq!(status, 201, "{key}");
    let alpha_key = key["key"].as_str().unwrap().to_owned();
    let (status, credits) = call(&server, &alpha_key, "GET", "/billing/credits", None);
    assert_eq!(status, 200, "{credits}");
    assert_eq!(credits["tenant"], alpha);
    let (status, _) = call(
        &server,
        &north_key,
        "GET",
        &format!("/tenants/{alpha}/keys"),
        None,
    );
    assert_eq!(status, 200);

    // South finds none of North's: its record, its tenants, their keys.
    for (method, path, body) in [
        ("GET", format!("/resellers/{north}"), None),
        ("GET", format!("/resellers/{north}/tenants"), None),
        (
            "POST",
            format!("/resellers/{north}/tenants"),
            Some(r#"{"name": "Spy"}"#),
        ),
        ("GET", format!("/tenants/{alpha}/keys"), None),
        (
            "POST",
            format!("/tenants/{alpha}/keys"),
            Some(r#"{"role": "admin", "name": "spy"}"#),
        ),
        ("GET", format!("/tenants/{}/keys", server.acme.0), None),
    ] {
        let (status, answer) = call(&server, &south_key, method, &path, body);
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("Alpha"), "{answer}");
    }
    let (_, south_list) = call(
        &server,
        &south_key,
        "GET",
        &format!("/resellers/{south}/tenants"),
        None,
    );
    assert_eq!(south_list["tenants"], serde_json::json!([]));

    // A reseller's key reads no tenant's data, and lists no resellers.
    for path in [
        "/billing/credits",
        "/leads",
        "/usage/records",
        "/resellers",
        "/tenants",
    ] {
        let (status, answer) = call(&server, &north_key, "GET", path, None);
        assert_eq!(status, 403, "GET {path}: {answer}");
    }
    // A tenant's key reaches no reseller endpoint.
    for path in [
        format!("/resellers/{north}"),
        format!("/resellers/{north}/tenants"),
        "/resellers".into(),
    ] {
        let (status, answer) = call(&server, &alpha_key, "GET", &path, None);
        assert_eq!(status, 403, "GET {path}: {answer}");
    }

    // The operator sees both resellers, and a tenant is no reseller.
    let (_, all) = call(&server, &operator, "GET", "/resellers", None);
    let names: Vec<&str> = all["resellers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reseller| reseller["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["North Agency", "South Agency"]);
    let (status, _) = call(
        &server,
        &operator,
        "GET",
        &format!("/resellers/{}", server.acme.0),
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = call(
        &server,
        &operator,
        "POST",
        &format!("/resellers/{}/tenants", server.acme.0),
        Some(r#"{"name": "Orphan"}"#),
    );
    assert_eq!(status, 404);
}

fn grant(server: &Server, tenant: i64, amount: &str) {
    let body = format!(r#"{{"tenant": {tenant}, "amount": "{amount}", "source": "purchase"}}"#);
    let key = format!("grant-{tenant}-{amount}");
    let (status, granted) = server.call(
        "POST",
        &server.operator_key,
        "/billing/credits/grants",
        Some(&body),
        &[("idempotency-key", &key)],
    );
    assert_eq!(status, 201, "{granted}");
}

#[test]
fn a_reseller_sells_at_retail_is_alerted_refused_when_its_wallet_runs_out_and_suspends_tenants() {
    let server = api_server::start();
    let operator = server.operator_key.clone();
    let (_, north) = call(
        &server,
        &operator,
        "POST",
        "/resellers",
        Some(r#"{"name": "North Agency"}"#),
    );
    let north = north["id"].as_i64().unwrap();
    let (_, south) = call(
        &server,
        &operator,
        "POST",
        "/resellers",
        Some(r#"{"name": "South Agency"}"#),
    );
    let south = south["id"].as_i64().unwrap();
    let (north_key, south_key) = (reseller_key(&server, north), reseller_key(&server, south));
    let pricing = format!("/resellers/{north}/pricing");

    // A price list is checked like pricing.toml, each refusal naming its
    // field.
    for (body, status, names) in [
        (r#"{"markup_percent": "-1"}"#, 422, "markup_percent"),
        (
            r#"{"prices": [{"plugin": "csv-leads", "function": "fetch"}]}"#,
            422,
            "price[0].function",
        ),
        (
            r#"{"prices": [{"plugin": "csv-leads", "function": "search", "per_unit": "-2"}]}"#,
            422,
            "price[0].per_unit",
        ),
        (r#"{"plans": {"gold": "10.00"}}"#, 422, "plans.gold"),
        (
            r#"{"packages": {"pack-500": "0"}}"#,
            422,
            "packages.pack-500",
        ),
        (r#"{"plans": {"starter": "10.001"}}"#, 422, "plans.starter"),
        (r#"{"markup": "30"}"#, 400, "markup"),
    ] {
        let (got, refused) = call(&server, &north_key, "PUT", &pricing, Some(body));
        assert_eq!(got, status, "{body}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains(names),
            "{refused}"
        );
    }
    let (status, stored) = call(
        &server,
        &north_key,
        "PUT",
        &pricing,
        Some(r#"{"markup_percent": "30", "plans": {"professional": "199.00"}}"#),
    );
    assert_eq!(status, 200, "{stored}");
    let retail_of = |list: &Value, id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|item| item["id"] == id)
            .map(|item| (item["wholesale"].clone(), item["retail"].clone()))
            .unwrap()
    };
    assert_eq!(
        retail_of(&stored["catalog"]["plans"], "starter"),
        ("49.00".into(), "63.70".into())
    );
    assert_eq!(
        retail_of(&stored["catalog"]["plans"], "professional"),
        ("149.00".into(), "199.00".into())
    );
    assert_eq!(
        retail_of(&stored["catalog"]["packages"], "pack-500"),
        ("5.00".into(), "6.50".into())
    );

    // Its tenant, with credits and csv-leads, sees retail prices only.
    let (_, alpha) = call(
        &server,
        &north_key,
        "POST",
        &format!("/resellers/{north}/tenants"),
        Some(r#"{"name": "Alpha"}"#),
    );
    let alpha = alpha["id"].as_i64().unwrap();
    let (_, key) = call(
        &server,
        &north_key,
        "POST",
        &format!("/tenants/{alpha}/keys"),
        Some(r#"{"role": "admin", "name": "alpha admin"}"#),
    );
    let alpha_key = key["key"].as_str().unwrap().to_owned();
    grant(&server, alpha, "100");
    grant(&server, north, "5");
    let (status, enabled) = call(
        &server,
        &alpha_key,
        "PUT",
        "/plugins/csv-leads/enablement",
        Some(r#"{"settings": {}}"#),
    );
    assert_eq!(status, 200, "{enabled}");
    {
        let mut conn = server.database.get().unwrap();
        let csv = "First Name,Email\nAda,ada@example.com\nBob,bob@example.com\n";
        tollgate::plugins::kv::put_file(
            &mut conn,
            tollgate::ids::TenantId(alpha),
            "csv-leads",
            "leads.csv",
            csv.as_bytes(),
            tollgate::units::Timestamp::from_micros(0),
        )
        .unwrap();
    }
    let (_, plans) = call(&server, &alpha_key, "GET", "/billing/plans", None);
    let price_of = |list: &Value, id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|item| item["id"] == id)
            .map(|item| item["price"].clone())
            .unwrap()
    };
    assert_eq!(price_of(&plans["plans"], "starter"), "63.70");
    assert_eq!(price_of(&plans["plans"], "professional"), "199.00");
    let (_, packages) = call(&server, &alpha_key, "GET", "/billing/packages", None);
    assert_eq!(price_of(&packages["packages"], "pack-500"), "6.50");

    // Alerted below 3 credits of its 5; one lead costs it 1 at wholesale,
    // and its tenant 1.3.
    let (status, alerts) = call(
        &server,
        &north_key,
        "PUT",
        &format!("/resellers/{north}/alerts"),
        Some(r#"{"thresholds": ["3", "100"]}"#),
    );
    assert_eq!(status, 200, "{alerts}");
    assert_eq!(alerts["thresholds"], serde_json::json!(["100", "3"]));
    for n in 0..5 {
        let (status, searched) = server.search(&alpha_key, r#"{"limit": 1}"#);
        assert_eq!(status, 200, "search {n}: {searched}");
        assert_eq!(searched["charged"], "1.3");
        let (_, alerts) = call(
            &server,
            &north_key,
            "GET",
            &format!("/resellers/{north}/alerts"),
            None,
        );
        let below_3 = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| alert["threshold"] == "3")
            .count();
        assert_eq!(below_3, usize::from(n >= 2), "after search {n}: {alerts}");
    }
    // The sixth is refused: its reseller's wallet is empty. The tenant is
    // told why, and nothing of the reseller's figures.
    let (status, refused) = server.search(&alpha_key, r#"{"limit": 1}"#);
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["error"]["code"], "reseller_balance_exhausted");
    assert!(refused["error"].get("available").is_none(), "{refused}");
    let (_, credits) = call(&server, &alpha_key, "GET", "/billing/credits", None);
    assert_eq!(credits["balance"]["available"], "93.5", "{credits}");
    let (_, records) = call(&server, &alpha_key, "GET", "/usage/records", None);
    assert_eq!(records["records"].as_array().unwrap().len(), 5, "{records}");
    assert!(!records.to_string().contains("wholesale"), "{records}");

    // North buys a package for its wallet on the platform's invoice; once
    // the operator records the payment, its tenant calls again.
    let (status, bought) = call(
        &server,
        &north_key,
        "POST",
        &format!("/resellers/{north}/purchases"),
        Some(r#"{"package": "pack-500"}"#),
    );
    assert_eq!(status, 201, "{bought}");
    assert_eq!(bought["invoice"]["issuer"], "Tollgate");
    assert_eq!(bought["invoice"]["subtotal"], "5.00", "{bought}");
    let invoice = bought["invoice"]["id"].as_i64().unwrap();
    let (status, paid) = call(
        &server,
        &operator,
        "POST",
        &format!("/billing/invoices/{invoice}/payments"),
        Some(&format!(r#"{{"tenant": {north}}}"#)),
    );
    assert_eq!(status, 200, "{paid}");
    let (_, wallet) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/alerts"),
        None,
    );
    assert_eq!(wallet["balance"]["available"], "500", "{wallet}");
    let (_, billed) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/invoices"),
        None,
    );
    assert_eq!(billed["invoices"][0]["id"], invoice, "{billed}");
    let (status, searched) = server.search(&alpha_key, r#"{"limit": 1}"#);
    assert_eq!(status, 200, "{searched}");
    assert_eq!(searched["charged"], "1.3");

    // The reseller's figures: what it sold, what it paid, the margin.
    let (status, margins) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/margins"),
        None,
    );
    assert_eq!(status, 200, "{margins}");
    assert_eq!(margins["totals"]["calls"]["retail"], "7.8");
    assert_eq!(margins["totals"]["calls"]["wholesale"], "6");
    assert_eq!(margins["totals"]["calls"]["margin"], "1.8");
    assert_eq!(margins["calls"][0]["tenant_id"], alpha);
    let (status, _) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/margins?from=2027-13"),
        None,
    );
    assert_eq!(status, 400);

    // None of it is South's to read or change, nor the tenant's.
    for (method, path, body) in [
        ("GET", pricing.clone(), None),
        ("PUT", pricing.clone(), Some(r#"{"markup_percent": "0"}"#)),
        ("GET", format!("/resellers/{north}/alerts"), None),
        (
            "PUT",
            format!("/resellers/{north}/alerts"),
            Some(r#"{"thresholds": []}"#),
        ),
        ("GET", format!("/resellers/{north}/margins"), None),
        ("PUT", format!("/tenants/{alpha}/suspension"), None),
        ("DELETE", format!("/tenants/{alpha}/suspension"), None),
    ] {
        let (status, answer) = call(&server, &south_key, method, &path, body);
        assert_eq!(status, 404, "South {method} {path}: {answer}");
        let (status, answer) = call(&server, &alpha_key, method, &path, body);
        assert_eq!(status, 403, "Alpha {method} {path}: {answer}");
    }
    let (status, _) = call(
        &server,
        &north_key,
        "PUT",
        &format!("/tenants/{north}/suspension"),
        None,
    );
    assert_eq!(status, 403, "a reseller does not suspend itself");

    // North suspends Alpha: its key is refused until North resumes it.
    let (status, suspended) = call(
        &server,
        &north_key,
        "PUT",
        &format!("/tenants/{alpha}/suspension"),
        None,
    );
    assert_eq!(status, 200, "{suspended}");
    assert!(suspended["suspended_at"].is_string());
    let (status, refused) = call(&server, &alpha_key, "GET", "/billing/credits", None);
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "tenant_suspended");
    let (status, resumed) = call(
        &server,
        &north_key,
        "DELETE",
        &format!("/tenants/{alpha}/suspension"),
        None,
    );
    assert_eq!(status, 200, "{resumed}");
    assert!(resumed["suspended_at"].is_null());
    let (status, _) = call(&server, &alpha_key, "GET", "/billing/credits", None);
    assert_eq!(status, 200);

    // A suspension the operator made is the operator's to lift.
    let (status, _) = call(
        &server,
        &operator,
        "PUT",
        &format!("/tenants/{alpha}/suspension"),
        None,
    );
    assert_eq!(status, 200);
    let (status, refused) = call(
        &server,
        &north_key,
        "DELETE",
        &format!("/tenants/{alpha}/suspension"),
        None,
    );
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "suspended_by_operator");
    let (status, _) = call(
        &server,
        &operator,
        "DELETE",
        &format!("/tenants/{alpha}/suspension"),
        None,
    );
    assert_eq!(status, 200);

    // The operator suspends North, and its tenants with it.
    let (status, _) = call(
        &server,
        &operator,
        "PUT",
        &format!("/tenants/{north}/suspension"),
        None,
    );
    assert_eq!(status, 200);
    for key in [&north_key, &alpha_key] {
        let (status, refused) = call(&server, key, "GET", &format!("/resellers/{north}"), None);
        assert_eq!(status, 403, "{refused}");
        assert_eq!(refused["error"]["code"], "tenant_suspended");
    }
}

#[test]
fn a_resellers_own_plugin_is_of_an_approved_kind_and_serves_its_tenants_alone() {
    use base64::Engine as _;
    let server = api_server::start();
    let operator = server.operator_key.clone();
    let mut resellers = Vec::new();
    for name in ["North Agency", "South Agency"] {
        let body = format!(r#"{{"name": "{name}"}}"#);
        let (_, created) = call(&server, &operator, "POST", "/resellers", Some(&body));
        let id = created["id"].as_i64().unwrap();
        resellers.push((id, reseller_key(&server, id)));
    }
    let [(north, north_key), (south, south_key)] = resellers.try_into().unwrap();
    let (_, manifest, wasm) = tollgate::runtime::artifacts::FIRST_PARTY
        .iter()
        .find(|(name, ..)| *name == "csv-leads")
        .unwrap();
    let manifest = manifest.replace(r#"name = "csv-leads""#, r#"name = "north-leads""#);
    let install = |key: &str, reseller: i64, manifest: &str| {
        let body = serde_json::json!({
            "manifest": manifest,
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
        });
        call(
            &server,
            key,
            "POST",
            &format!("/resellers/{reseller}/plugins"),
            Some(&body.to_string()),
        )
    };

    // Nothing is approved yet, and a reseller approves nothing itself.
    let (status, refused) = install(&north_key, north, &manifest);
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "kind_not_approved");
    let approve = r#"{"kinds": ["lead-source"], "http_hosts": []}"#;
    let path = format!("/resellers/{north}/approvals");
    let (status, _) = call(&server, &north_key, "PUT", &path, Some(approve));
    assert_eq!(status, 403);
    let (status, refused) = call(
        &server,
        &operator,
        "PUT",
        &path,
        Some(r#"{"kinds": ["payment-provider"]}"#),
    );
    assert_eq!(status, 422, "{refused}");
    let (status, approved) = call(&server, &operator, "PUT", &path, Some(approve));
    assert_eq!(status, 200, "{approved}");
    let (_, read) = call(&server, &north_key, "GET", &path, None);
    assert_eq!(read["kinds"], serde_json::json!(["lead-source"]));

    // A host the operator did not approve for it is refused.
    let reaching = manifest.replace(
        r#"author = "Tollgate""#,
        "author = \"North\"\n\n[capabilities]\nhttp_hosts = [\"api.north.example\"]",
    );
    let (status, refused) = install(&north_key, north, &reaching);
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "host_not_approved");
    let (status, installed) = install(&north_key, north, &manifest);
    assert_eq!(status, 201, "{installed}");
    assert_eq!(installed["reseller"], north);
    let (_, own) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/plugins"),
        None,
    );
    assert_eq!(own["plugins"][0]["name"], "north-leads");

    // Its name is North's: South (once approved) and the platform cannot
    // take it, and South does not see North's list.
    call(
        &server,
        &operator,
        "PUT",
        &format!("/resellers/{south}/approvals"),
        Some(approve),
    );
    let (status, refused) = install(&south_key, south, &manifest);
    assert_eq!(status, 409, "{refused}");
    // Nor may a reseller take a name the platform ships.
    let (_, shipped, _) = tollgate::runtime::artifacts::FIRST_PARTY
        .iter()
        .find(|(name, ..)| *name == "http-leads")
        .unwrap();
    let taken = manifest.replace(r#"name = "north-leads""#, r#"name = "http-leads""#);
    assert!(shipped.contains(r#"name = "http-leads""#));
    let (status, refused) = install(&north_key, north, &taken);
    assert_eq!(status, 409, "{refused}");
    let body = serde_json::json!({
        "manifest": manifest,
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
    });
    let (status, refused) = call(
        &server,
        &operator,
        "POST",
        "/plugins",
        Some(&body.to_string()),
    );
    assert_eq!(status, 409, "{refused}");
    let (status, _) = call(
        &server,
        &south_key,
        "GET",
        &format!("/resellers/{north}/plugins"),
        None,
    );
    assert_eq!(status, 404);

    // North prices it for its tenants; each has a tenant with credits.
    let (status, priced) = call(
        &server,
        &north_key,
        "PUT",
        &format!("/resellers/{north}/pricing"),
        Some(
            r#"{"markup_percent": "30", "prices": [{"plugin": "north-leads", "function": "search", "per_call": "0.4"}]}"#,
        ),
    );
    assert_eq!(status, 200, "{priced}");
    grant(&server, north, "100");
    let mut tenant_keys = Vec::new();
    for (reseller, key, name) in [(north, &north_key, "Alpha"), (south, &south_key, "Beta")] {
        let (_, tenant) = call(
            &server,
            key,
            "POST",
            &format!("/resellers/{reseller}/tenants"),
            Some(&format!(r#"{{"name": "{name}"}}"#)),
        );
        let tenant = tenant["id"].as_i64().unwrap();
        let (_, admin) = call(
            &server,
            key,
            "POST",
            &format!("/tenants/{tenant}/keys"),
            Some(r#"{"role": "admin", "name": "admin"}"#),
        );
        grant(&server, tenant, "50");
        tenant_keys.push((tenant, admin["key"].as_str().unwrap().to_owned()));
    }
    let [(alpha, alpha_key), (_, beta_key)] = tenant_keys.try_into().unwrap();

    // North's tenant sees it, enables it and is charged North's price.
    let (_, listed) = call(&server, &alpha_key, "GET", "/plugins", None);
    let own: Vec<&Value> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|plugin| plugin["name"] == "north-leads")
        .collect();
    assert_eq!(own.len(), 1, "{listed}");
    assert_eq!(own[0]["reseller"], north);
    let (status, enabled) = call(
        &server,
        &alpha_key,
        "PUT",
        "/plugins/north-leads/enablement",
        Some(r#"{"settings": {}}"#),
    );
    assert_eq!(status, 200, "{enabled}");
    {
        let mut conn = server.database.get().unwrap();
        tollgate::plugins::kv::put_file(
            &mut conn,
            tollgate::ids::TenantId(alpha),
            "north-leads",
            "leads.csv",
            b"First Name,Email\nAda,ada@example.com\n",
            tollgate::units::Timestamp::from_micros(0),
        )
        .unwrap();
    }
    let (status, searched) = call(
        &server,
        &alpha_key,
        "POST",
        "/plugins/north-leads/invoke/search",
        Some(r#"{"limit": 5}"#),
    );
    assert_eq!(status, 200, "{searched}");
    assert_eq!(searched["charged"], "0.4");
    let (_, margins) = call(
        &server,
        &north_key,
        "GET",
        &format!("/resellers/{north}/margins"),
        None,
    );
    let row = &margins["calls"][0];
    assert_eq!(
        (row["plugin"].as_str(), row["retail"].as_str()),
        (Some("north-leads"), Some("0.4"))
    );
    // The platform's price for a reseller's plugin: 0.05 a call plus its fuel.
    let wholesale: f64 = row["wholesale"].as_str().unwrap().parse().unwrap();
    assert!(wholesale > 0.05 && wholesale < 20.05, "{margins}");

    // South's tenant neither sees nor reaches it.
    let (_, listed) = call(&server, &beta_key, "GET", "/plugins", None);
    assert!(!listed.to_string().contains("north-leads"), "{listed}");
    for (method, path, body) in [
        (
            "PUT",
            "/plugins/north-leads/enablement",
            Some(r#"{"settings": {}}"#),
        ),
        (
            "POST",
            "/plugins/north-leads/invoke/search",
            Some(r#"{"limit": 5}"#),
        ),
    ] {
        let (status, refused) = call(&server, &beta_key, method, path, body);
        assert_eq!(status, 404, "{method} {path}: {refused}");
    }
}

#[test]
fn two_resellers_reach_nothing_of_each_others_over_every_reseller_endpoint() {
    let server = api_server::start();
    let operator = server.operator_key.clone();
    let mut resellers = Vec::new();
    for name in ["North Agency", "South Agency"] {
        let body = format!(r#"{{"name": "{name}"}}"#);
        let (_, created) = call(&server, &operator, "POST", "/resellers", Some(&body));
        let id = created["id"].as_i64().unwrap();
        resellers.push((id, reseller_key(&server, id)));
    }
    let [(north, north_key), (_south, south_key)] = resellers.try_into().unwrap();
    let (status, _) = call(
        &server,
        &north_key,
        "PUT",
        &format!("/resellers/{north}/pricing"),
        Some(r#"{"markup_percent": "30"}"#),
    );
    assert_eq!(status, 200);
    let (status, _) = call(
        &server,
        &north_key,
        "PUT",
        &format!("/resellers/{north}/branding"),
        Some(r#"{"name": "North Agency Ltd", "address": "2 Harbour Road"}"#),
    );
    assert_eq!(status, 200);
    let (_, alpha) = call(
        &server,
        &north_key,
        "POST",
        &format!("/resellers/{north}/tenants"),
        Some(r#"{"name": "Alpha"}"#),
    );
    let alpha = alpha["id"].as_i64().unwrap();
    let (_, key) = call(
        &server,
        &north_key,
        "POST",
        &format!("/tenants/{alpha}/keys"),
        Some(r#"{"role": "admin", "name": "alpha admin"}"#),
    );
    let alpha_key = key["key"].as_str().unwrap().to_owned();
    grant(&server, alpha, "50");
    let (status, subscribed) = call(
        &server,
        &alpha_key,
        "POST",
        "/billing/subscriptions",
        Some(r#"{"plan": "starter"}"#),
    );
    assert_eq!(status, 201, "{subscribed}");
    let invoice = subscribed["invoice"]["id"].as_i64().unwrap();
    let (status, paid) = call(
        &server,
        &operator,
        "POST",
        &format!("/billing/invoices/{invoice}/payments"),
        Some(&format!(r#"{{"tenant": {alpha}}}"#)),
    );
    assert_eq!(status, 200, "{paid}");

    // North's revenue analytics are its sales to its tenants, at retail;
    // South's and the platform's hold none of them.
    for path in [
        format!("/resellers/{north}/revenue"),
        format!(
            "/resellers/{north}/reports/monthly?month={}",
            chrono::Utc::now().format("%Y-%m")
        ),
    ] {
        let (status, report) = call(&server, &north_key, "GET", &path, None);
        assert_eq!(status, 200, "{path}: {report}");
        assert_eq!(report["revenue"]["revenue"], "63.70", "{path}: {report}");
        assert_eq!(report["revenue"]["invoices_paid"], 1);
        assert_eq!(report["mrr"]["mrr"], "63.70", "{path}: {report}");
        assert_eq!(report["mrr"]["customers"], 1);
        assert_eq!(report["top_customers"][0]["tenant"], alpha);
    }
    let (status, _, csv) = server.raw(
        &north_key,
        &format!("/resellers/{north}/revenue?format=csv&table=top_customers"),
    );
    assert_eq!(status, 200);
    let csv = String::from_utf8_lossy(&csv);
    assert_eq!(
        csv.lines().nth(1),
        Some(format!("{alpha},Alpha,63.70,63.70").as_str()),
        "{csv}"
    );
    let (status, report) = call(&server, &operator, "GET", "/billing/revenue", None);
    assert_eq!(status, 200, "{report}");
    // The platform's own: Alpha's invoice is North's revenue, not the
    // platform's; Alpha's MRR counts at the platform's price.
    assert!(!report["revenue"].to_string().contains("63.70"), "{report}");
    assert!(
        report["top_customers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["tenant"] != alpha),
        "{report}"
    );
    assert_eq!(report["mrr"]["mrr"], "49.00", "{report}");

    // Every reseller endpoint, aimed at North: South finds nothing, North's
    // tenant is refused, North itself reads its own.
    let mut covered = 0;
    for (method, path) in api::v1::OPERATIONS {
        let concrete = match path {
            _ if path.starts_with("/resellers/{id}") => path.replace("{id}", &north.to_string()),
            "/tenants/{tenant}/keys"
            | "/tenants/{tenant}/suspension"
            | "/tenants/{tenant}/contact" => path.replace("{tenant}", &alpha.to_string()),
            "/tenants/{tenant}/keys/{key}" => format!("/tenants/{alpha}/keys/1"),
            _ => continue,
        };
        let method = method.to_uppercase();
        let body = (method != "GET" && method != "DELETE").then_some(r#"{"name": "Spy"}"#);
        let (status, answer) = call(&server, &south_key, &method, &concrete, body);
        // Approving and invoicing are the operator's alone, whichever
        // reseller they name.
        let expected = match (method.as_str(), path) {
            ("PUT", "/resellers/{id}/approvals") | ("POST", "/resellers/{id}/invoices") => 403,
            _ => 404,
        };
        assert_eq!(status, expected, "South {method} {concrete}: {answer}");
        assert!(!answer.to_string().contains("North Agency"), "{answer}");
        let (status, answer) = call(&server, &alpha_key, &method, &concrete, body);
        let expected = match path {
            // A tenant's admin manages its own keys and contact address.
            "/tenants/{tenant}/keys"
            | "/tenants/{tenant}/keys/{key}"
            | "/tenants/{tenant}/contact" => status,
            _ => 403,
        };
        assert_eq!(status, expected, "Alpha {method} {concrete}: {answer}");
        if method == "GET" {
            let (status, answer) = call(&server, &north_key, &method, &concrete, None);
            assert_eq!(status, 200, "North {method} {concrete}: {answer}");
        }
        covered += 1;
    }
    assert!(covered >= 19, "{covered}");

    // Where Alpha's system emails go: set by North or by Alpha's admin,
    // checked, and none of South's business.
    let contact = format!("/tenants/{alpha}/contact");
    let (status, answer) = call(
        &server,
        &north_key,
        "PUT",
        &contact,
        Some(r#"{"email": "billing@alpha.example"}"#),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["email"], "billing@alpha.example");
    let (status, answer) = call(
        &server,
        &alpha_key,
        "PUT",
        &contact,
        Some(r#"{"email": "not an address"}"#),
    );
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &"invalid_input".into()),
        "{answer}"
    );
    let (status, answer) = call(
        &server,
        &south_key,
        "PUT",
        &contact,
        Some(r#"{"email": "spy@south.example"}"#),
    );
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = call(&server, &alpha_key, "GET", &contact, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["email"], "billing@alpha.example");
    let (status, _) = call(&server, &alpha_key, "PUT", &contact, Some("{}"));
    assert_eq!(status, 400, "an address, or null, must be given");
    let (_, answer) = call(
        &server,
        &alpha_key,
        "PUT",
        &contact,
        Some(r#"{"email": null}"#),
    );
    assert_eq!(answer["email"], serde_json::Value::Null, "{answer}");

    // Nothing North's tenant reads shows a wholesale price, the platform's
    // name or the word wholesale: every GET of the API.
    let wholesale_marks = ["49.00", "Tollgate", "wholesale"];
    for (method, path) in api::v1::OPERATIONS {
        if method != "get" || path.starts_with("/resellers") {
            continue;
        }
        let concrete = server.concrete(path, tollgate::ids::TenantId(alpha));
        let (_, answer) = call(&server, &alpha_key, "GET", &concrete, None);
        let text = answer.to_string();
        for mark in wholesale_marks {
            // The first-party plugins' descriptions name their protocol's
            // headers (X-Tollgate-Signature); their author is North's brand.
            if concrete == "/plugins" && mark == "Tollgate" {
                assert!(!text.contains(r#""author":"Tollgate""#), "{text}");
                continue;
            }
            assert!(
                !text.contains(mark),
                "GET {concrete} shows {mark:?}: {text}"
            );
        }
    }
    // The invoice as its tenant sees it: North's, at retail.
    let (_, document) = call(
        &server,
        &alpha_key,
        "GET",
        &format!("/billing/invoices/{invoice}"),
        None,
    );
    assert_eq!(document["issuer"], "North Agency Ltd", "{document}");
    let (status, _, html) = server.raw(&alpha_key, &format!("/billing/invoices/{invoice}.html"));
    assert_eq!(status, 200);
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains("North Agency Ltd") && html.contains("2 Harbour Road"),
        "{html}"
    );
    assert!(
        !html.contains("Tollgate") && !html.contains("49.00"),
        "{html}"
    );
}
