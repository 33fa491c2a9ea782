//! White-label resellers, their tenants and keys, through the API: the
//! operator creates resellers; a reseller creates and lists its own tenants
//! and manages their keys; no reseller sees another's, and a reseller's key
//! reads no tenant's data.

mod api_server;

use serde_json::Value;

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
