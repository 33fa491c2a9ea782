//! The billing API end to end: invoices, credit notes and receipts as
//! JSON, HTML and PDF; plans and subscriptions; packages, payment methods,
//! payments and providers' notifications; on SQLite or PostgreSQL
//! (TEST_DATABASE_URL).

mod api_server;

use api_server::*;

#[test]
fn a_tenant_reads_its_invoices_and_credit_notes_as_json_html_and_pdf() {
    let server = start();
    let (invoice, note) = (server.acme_invoice, server.acme_credit_note);
    let (status, list) = server.get(&server.acme_key, "/billing/invoices");
    assert_eq!(status, 200, "{list}");
    let listed = &list["invoices"];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        listed[0],
        serde_json::json!({
            "id": invoice,
            "kind": "invoice",
            "number": "INV-000001",
            "issuer": "Tollgate",
            "state": "paid",
            "currency": "USD",
            "lines": [{
                "description": "Starter plan, November",
                "quantity": 1,
                "unit_price": "49.00",
                "amount": "49.00",
            }],
            "subtotal": "49.00",
            "tax_name": "VAT",
            "tax_rate": "0.2",
            "tax": "9.80",
            "total": "58.80",
            "credits_invoice": null,
            "created_at": NOW.to_string(),
            "finalized_at": NOW.to_string(),
            "closed_at": NOW.to_string(),
            "pdf": format!("/api/v1/billing/invoices/{invoice}.pdf"),
        })
    );
    assert_eq!(list["next_cursor"], serde_json::Value::Null);
    let (status, one) = server.get(&server.acme_key, &format!("/billing/invoices/{invoice}"));
    assert_eq!((status, &one), (200, &listed[0]));

    let (status, notes) = server.get(&server.acme_key, "/billing/credit-notes");
    assert_eq!(status, 200);
    assert_eq!(notes["credit_notes"][0]["number"], "CN-000001");
    assert_eq!(notes["credit_notes"][0]["credits_invoice"], invoice);
    assert_eq!(
        notes["credit_notes"][0]["total"], "12.00",
        "$10.00 plus 20%"
    );

    // The PDF, read back by a PDF reader.
    let (status, content_type, pdf) = server.raw(
        &server.acme_key,
        &format!("/billing/invoices/{invoice}.pdf"),
    );
    assert_eq!((status, content_type.as_str()), (200, "application/pdf"));
    let text = pdftotext(&pdf);
    for expected in [
        "Number INV-000001",
        "Status Paid",
        "Acme",
        "Starter plan, November",
        "Subtotal (USD) 49.00",
        "VAT 20% (USD) 9.80",
        "Total (USD) 58.80",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    let (status, _, pdf) = server.raw(
        &server.acme_key,
        &format!("/billing/credit-notes/{note}.pdf"),
    );
    assert_eq!(status, 200);
    let text = pdftotext(&pdf);
    assert!(text.contains("Credits invoice INV-000001"), "{text}");
    let (status, content_type, html) = server.raw(
        &server.acme_key,
        &format!("/billing/invoices/{invoice}.html"),
    );
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(String::from_utf8(html).unwrap().contains("58.80"));

    // What is not one of the tenant's documents is not found, in the API's
    // error shape; a list's parameters are checked.
    for path in [
        format!("/billing/invoices/{note}"),
        format!("/billing/credit-notes/{invoice}"),
        format!("/billing/invoices/{invoice}.txt"),
        "/billing/invoices/abc".to_owned(),
        "/billing/invoices/999999.pdf".to_owned(),
    ] {
        let (status, body) = server.get(&server.acme_key, &path);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {body}"
        );
    }
    for path in ["/billing/invoices/{invoice}.pdf", "/billing/credit-notes"] {
        let path = path.replace("{invoice}", &invoice.to_string());
        let (status, _) = server.get(&server.globex_key, &path);
        let expected = if path.ends_with(".pdf") { 404 } else { 200 };
        assert_eq!(status, expected, "{path}");
    }
    for query in ["limit=0", "after=x", "page=2"] {
        let (status, body) = server.get(&server.acme_key, &format!("/billing/invoices?{query}"));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{query}: {body}"
        );
    }
    let (status, page) = server.get(&server.acme_key, "/billing/invoices?limit=1");
    assert_eq!(status, 200);
    assert_eq!(page["next_cursor"], invoice.to_string());
    let (_, rest) = server.get(
        &server.acme_key,
        &format!("/billing/invoices?after={invoice}"),
    );
    assert_eq!(rest["invoices"], serde_json::json!([]));
}

#[test]
fn a_tenant_admin_subscribes_changes_plan_and_cancels_and_the_operator_records_payments() {
    let server = start();
    let globex = server.globex.0;
    let (status, plans) = server.get(&server.acme_key, "/billing/plans");
    assert_eq!(status, 200);
    let ids: Vec<&str> = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plan| plan["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "starter",
            "professional",
            "enterprise",
            "starter-annual",
            "professional-annual",
            "enterprise-annual"
        ]
    );
    assert_eq!(plans["plans"][0]["price"], "49.00");
    assert_eq!(plans["plans"][0]["credits"], "1000");

    let subscribe =
        |key: &str, body: &str| server.call("POST", key, "/billing/subscriptions", Some(body), &[]);
    // A member may not subscribe; an unknown plan or a bad body is refused.
    let (status, _) = subscribe(&server.acme_key, r#"{"plan": "starter"}"#);
    assert_eq!(status, 403);
    for (body, code) in [
        (r#"{"plan": "platinum"}"#, "unknown_plan"),
        (r#"{"plan": 5}"#, "invalid_input"),
        (r#"{"plan": "starter", "seats": 2}"#, "invalid_input"),
    ] {
        let (status, answer) = subscribe(&server.globex_key, body);
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, created) = subscribe(&server.globex_key, r#"{"plan": "starter"}"#);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["subscription"]["state"], "incomplete");
    assert_eq!(created["invoice"]["state"], "open");
    assert_eq!(created["invoice"]["total"], "58.80");
    let invoice = created["invoice"]["id"].as_i64().unwrap();
    let (status, again) = subscribe(&server.globex_key, r#"{"plan": "starter"}"#);
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("already_subscribed"))
    );
    let available =
        || server.get(&server.globex_key, "/billing/credits").1["balance"]["available"].clone();
    assert_eq!(available(), "0", "nothing before the invoice is paid");

    // The operator records the payment (a bank transfer arrived): the
    // allowance is granted, once.
    let pay = |key: &str, invoice: i64, tenant: i64| {
        server.call(
            "POST",
            key,
            &format!("/billing/invoices/{invoice}/payments"),
            Some(&format!(r#"{{"tenant": {tenant}}}"#)),
            &[],
        )
    };
    assert_eq!(pay(&server.globex_key, invoice, globex).0, 403);
    let (status, body) = pay(&server.operator_key, invoice, server.acme.0);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, paid) = pay(&server.operator_key, invoice, globex);
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["subscription"]["state"], "active");
    assert_eq!(available(), "1000");
    assert_eq!(pay(&server.operator_key, invoice, globex).0, 200);
    assert_eq!(available(), "1000");
    let (_, current) = server.get(&server.globex_key, "/billing/subscriptions");
    assert_eq!(current["subscription"]["plan"], "starter");

    let change = |plan: &str| {
        server.call(
            "PUT",
            &server.globex_key,
            "/billing/subscriptions/plan",
            Some(&format!(r#"{{"plan": "{plan}"}}"#)),
            &[],
        )
    };
    let (status, same) = change("starter");
    assert_eq!(
        (status, same["error"]["code"].as_str()),
        (409, Some("same_plan"))
    );
    let (status, upgraded) = change("professional");
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(upgraded["change"], "upgraded");
    assert_eq!(upgraded["subscription"]["plan"], "professional");
    assert_eq!(upgraded["invoice"]["lines"].as_array().unwrap().len(), 2);
    let (status, downgrade) = change("starter");
    assert_eq!(status, 200);
    assert_eq!(
        (
            downgrade["change"].as_str(),
            downgrade["subscription"]["next_plan"].as_str()
        ),
        (Some("scheduled"), Some("starter"))
    );

    let (status, canceled) = server.call(
        "DELETE",
        &server.globex_key,
        "/billing/subscriptions",
        None,
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(canceled["subscription"]["cancel_at_period_end"], true);
    // Acme has no subscription to cancel.
    let acme_admin = {
        let mut conn = server.database.get().unwrap();
        auth::create_key(&mut conn, Some(server.acme), Role::Admin, "admin", NOW)
            .unwrap()
            .1
    };
    let (status, none) = server.call("DELETE", &acme_admin, "/billing/subscriptions", None, &[]);
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (404, Some("not_subscribed"))
    );
    let (_, acme_current) = server.get(&server.acme_key, "/billing/subscriptions");
    assert_eq!(acme_current["subscription"], serde_json::Value::Null);
}

#[test]
fn a_package_bought_by_bank_transfer_grants_its_credits_once_the_operator_confirms_it() {
    let server = start();
    let globex = server.globex.0;
    let (status, packages) = server.get(&server.acme_key, "/billing/packages");
    assert_eq!(status, 200);
    assert_eq!(
        packages["packages"][1],
        serde_json::json!({
            "id": "pack-1000",
            "credits": "1000",
            "discount_percent": "5",
            "price": "9.50",
            "currency": "USD",
        })
    );
    let buy =
        |key: &str, body: &str| server.call("POST", key, "/billing/purchases", Some(body), &[]);
    assert_eq!(
        buy(&server.acme_key, r#"{"package": "pack-1000"}"#).0,
        403,
        "members may not buy"
    );
    let (status, unknown) = buy(&server.globex_key, r#"{"package": "pack-7"}"#);
    assert_eq!(
        (status, unknown["error"]["code"].as_str()),
        (400, Some("unknown_package"))
    );
    let (status, bought) = buy(&server.globex_key, r#"{"package": "pack-1000"}"#);
    assert_eq!(status, 201, "{bought}");
    assert_eq!(bought["purchase"]["granted"], false);
    // $9.50 and 20% VAT.
    assert_eq!(bought["invoice"]["total"], "11.40");
    assert_eq!(
        bought["invoice"]["lines"][0]["description"],
        "1000 credits (package pack-1000, 5% off)"
    );
    let available =
        || server.get(&server.globex_key, "/billing/credits").1["balance"]["available"].clone();
    assert_eq!(available(), "0", "a bank transfer waits for the operator");

    let invoice = bought["invoice"]["id"].as_i64().unwrap();
    let record = || {
        server.call(
            "POST",
            &server.operator_key,
            &format!("/billing/invoices/{invoice}/payments"),
            Some(&format!(r#"{{"tenant": {globex}}}"#)),
            &[],
        )
    };
    let (status, paid) = record();
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["purchase"]["granted"], true);
    assert_eq!(available(), "1000");
    assert_eq!(record().0, 200);
    assert_eq!(available(), "1000", "a second record grants nothing");
    let (_, invoices) = server.get(&server.globex_key, "/billing/invoices");
    assert_eq!(invoices["invoices"][0]["state"], "paid");
}

#[allow(dead_code)]
mod support;

/// A bank's confirmation, signed with `secret` as the bank-transfer plugin
/// checks it.
fn bank_confirmation(secret: &[u8], body: &str) -> (String, String) {
    (
        body.to_owned(),
        support::hmac_sha256_hex(secret, body.as_bytes()),
    )
}

#[test]
fn a_package_paid_by_bank_transfer_is_granted_once_whatever_the_notifications_do() {
    let server = start();
    let key = &server.globex_key;
    // Globex saves a bank transfer and buys 500 credits with it.
    let (status, saved) = server.call(
        "POST",
        key,
        "/billing/payment-methods",
        Some(r#"{"provider": "bank-transfer", "method": "bank_transfer"}"#),
        &[],
    );
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["payment_method"]["default"], true);
    let method = saved["payment_method"]["id"].as_i64().unwrap();
    let (status, bought) = server.call(
        "POST",
        key,
        "/billing/purchases",
        Some(&format!(
            r#"{{"package": "pack-500", "payment_method": {method}}}"#
        )),
        &[],
    );
    assert_eq!(status, 201, "{bought}");
    let payment = &bought["payment"];
    assert_eq!(payment["state"], "pending", "{bought}");
    // $5.00 and 20% VAT.
    assert_eq!(payment["amount"], "6.00");
    let reference = payment["provider_reference"].as_str().unwrap().to_owned();
    let instructions = payment["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("GB33BUKB20201555555555") && instructions.contains(&reference),
        "{instructions}"
    );
    assert_eq!(bought["purchase"]["granted"], false);
    let balance =
        |server: &Server| server.get(key, "/billing/credits").1["balance"]["available"].clone();
    assert_eq!(balance(&server), "0");

    let notify = |body: &str, signature: &str| {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!(
                "{}/billing/providers/bank-transfer/notifications",
                server.base
            ))
            .header("x-tollgate-signature", signature)
            .header("connection", "close")
            .body(body.to_owned())
            .unwrap();
        let mut response = server.http.run(request).unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    // Forged: signed with a guessed secret. Refused, nothing granted.
    let succeeded = format!("event_id=evt-2&reference={reference}&status=succeeded");
    let (body, forged) = bank_confirmation(b"guess", &succeeded);
    let (status, answer) = notify(&body, &forged);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("invalid_signature")),
        "{answer}"
    );
    assert_eq!(balance(&server), "0");

    // The confirmation, then a failure the bank sent earlier that arrives
    // late, then the confirmation replayed: 500 credits, once.
    let (body, signature) = bank_confirmation(b"bank-secret", &succeeded);
    let (status, answer) = notify(&body, &signature);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        serde_json::json!({"events": 1, "duplicates": 0, "applied": 1})
    );
    let failed = format!("event_id=evt-1&reference={reference}&status=failed&reason=late");
    let (body, signature) = bank_confirmation(b"bank-secret", &failed);
    let (status, answer) = notify(&body, &signature);
    assert_eq!(
        (status, answer),
        (
            200,
            serde_json::json!({"events": 1, "duplicates": 0, "applied": 0})
        )
    );
    let (body, signature) = bank_confirmation(b"bank-secret", &succeeded);
    let (status, answer) = notify(&body, &signature);
    assert_eq!(
        (status, answer),
        (
            200,
            serde_json::json!({"events": 1, "duplicates": 1, "applied": 0})
        )
    );
    assert_eq!(balance(&server), "500");
    let (_, payments) = server.get(key, "/billing/payments");
    let listed = payments["payments"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{payments}");
    assert_eq!(
        (&listed[0]["state"], &listed[0]["failure_reason"]),
        (&serde_json::json!("succeeded"), &serde_json::Value::Null)
    );
    let invoice = bought["invoice"]["id"].as_i64().unwrap();
    let (_, document) = server.get(key, &format!("/billing/invoices/{invoice}"));
    assert_eq!(document["state"], "paid", "{document}");
    // Paid, so it cannot be paid again; the operator's late record of the
    // transfer grants nothing more.
    let (status, again) = server.call(
        "POST",
        key,
        &format!("/billing/invoices/{invoice}/pay"),
        Some(&format!(r#"{{"payment_method": {method}}}"#)),
        &[],
    );
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("invoice_state")),
        "{again}"
    );
    let globex = server.globex.0;
    let (status, recorded) = server.call(
        "POST",
        &server.operator_key,
        &format!("/billing/invoices/{invoice}/payments"),
        Some(&format!(r#"{{"tenant": {globex}}}"#)),
        &[],
    );
    assert_eq!(status, 200, "{recorded}");
    assert_eq!(recorded["purchase"]["granted"], true);
    assert_eq!(balance(&server), "500");

    // The receipt, numbered after the payment, as JSON and as a PDF.
    let paid = listed[0]["id"].as_i64().unwrap();
    let (status, receipt) = server.get(key, &format!("/billing/receipts/{paid}"));
    assert_eq!(status, 200, "{receipt}");
    let number = format!("RCT-{paid:06}");
    assert_eq!(receipt["receipt"]["number"], number.as_str());
    assert_eq!(
        receipt["receipt"]["paid_with"],
        "bank transfer via bank-transfer"
    );
    let (status, content_type, pdf) = server.raw(key, &format!("/billing/receipts/{paid}.pdf"));
    assert_eq!((status, content_type.as_str()), (200, "application/pdf"));
    let text = pdftotext(&pdf);
    let invoice_number = document["number"].as_str().unwrap();
    for expected in [
        "Receipt".to_owned(),
        format!("Number {number}"),
        "Status Paid".to_owned(),
        format!("For invoice {invoice_number}"),
        "Paid with bank transfer via bank-transfer".to_owned(),
        format!("Reference {reference}"),
        "500 credits (package pack-500)".to_owned(),
        "Total (USD) 6.00".to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "{expected:?} missing from\n{text}"
        );
    }
    // Another tenant's receipt is not found.
    let (status, _) = server.get(&server.acme_key, &format!("/billing/receipts/{paid}"));
    assert_eq!(status, 404);
}

#[test]
fn payment_methods_refuse_card_numbers_unknown_providers_and_other_tenants() {
    let server = start();
    let key = &server.globex_key;
    for (body, code, words) in [
        (
            r#"{"provider": "card", "method": "card", "token": "pm_1"}"#,
            "unknown_provider",
            "no payment provider \"card\"",
        ),
        (
            r#"{"provider": "bank-transfer", "method": "card", "token": "4242 4242 4242 4242"}"#,
            "invalid_payment_method",
            "looks like a card number",
        ),
        (
            r#"{"provider": "bank-transfer", "method": "cash"}"#,
            "invalid_payment_method",
            "not card, paypal or bank_transfer",
        ),
        (
            r#"{"provider": "bank-transfer", "method": "bank_transfer", "token": "x"}"#,
            "invalid_payment_method",
            "a bank transfer has none",
        ),
    ] {
        let (status, answer) =
            server.call("POST", key, "/billing/payment-methods", Some(body), &[]);
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }
    let (_, listed) = server.get(key, "/billing/payment-methods");
    assert_eq!(listed["payment_methods"], serde_json::json!([]));
    // Acme's method cannot pay Globex's invoice, and costs Globex nothing.
    let (status, bought) = server.call(
        "POST",
        key,
        "/billing/purchases",
        Some(&format!(
            r#"{{"package": "pack-500", "payment_method": {}}}"#,
            server.acme_method
        )),
        &[],
    );
    assert_eq!(
        (status, bought["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{bought}"
    );
    let (_, payments) = server.get(key, "/billing/payments");
    assert_eq!(payments["payments"], serde_json::json!([]));
}

#[test]
fn a_purchase_retried_with_its_idempotency_key_sells_and_charges_once() {
    let server = start();
    let key = &server.globex_key;
    let (status, saved) = server.call(
        "POST",
        key,
        "/billing/payment-methods",
        Some(r#"{"provider": "bank-transfer", "method": "bank_transfer"}"#),
        &[],
    );
    assert_eq!(status, 201, "{saved}");
    let method = saved["payment_method"]["id"].as_i64().unwrap();
    let body = format!(r#"{{"package": "pack-1000", "payment_method": {method}}}"#);
    let buy = |idempotency_key: &str, body: &str| {
        server.call(
            "POST",
            key,
            "/billing/purchases",
            Some(body),
            &[("idempotency-key", idempotency_key)],
        )
    };
    let (status, first) = buy("buy-1", &body);
    assert_eq!(status, 201, "{first}");
    let (status, again) = buy("buy-1", &body);
    assert_eq!((status, &again), (201, &first), "the first answer, again");
    // The key with another request is refused.
    let (status, other) = buy("buy-1", r#"{"package": "pack-500"}"#);
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let (_, invoices) = server.get(key, "/billing/invoices");
    assert_eq!(
        invoices["invoices"].as_array().unwrap().len(),
        1,
        "{invoices}"
    );
    let (_, payments) = server.get(key, "/billing/payments");
    assert_eq!(
        payments["payments"].as_array().unwrap().len(),
        1,
        "{payments}"
    );
    // A method that is not the tenant's sells nothing.
    let (status, refused) = buy(
        "buy-2",
        &format!(
            r#"{{"package": "pack-1000", "payment_method": {}}}"#,
            server.acme_method
        ),
    );
    assert_eq!(status, 404, "{refused}");
    let (_, invoices) = server.get(key, "/billing/invoices");
    assert_eq!(
        invoices["invoices"].as_array().unwrap().len(),
        1,
        "{invoices}"
    );
}

#[test]
fn bad_billing_input_gets_a_clear_error_and_sells_or_charges_nothing() {
    let server = start();
    let key = &server.globex_key;
    let globex = server.globex.0;
    let cases: Vec<(&str, &str, String, &str, u16, &str)> = vec![
        (
            "POST",
            &server.operator_key,
            "/billing/credits/grants".into(),
            r#"{"tenant": GLOBEX, "amount": "-5", "source": "promotion"}"#,
            400,
            "amount must be greater than zero",
        ),
        (
            "POST",
            key,
            "/billing/purchases".into(),
            r#"{"package": "pack-500", "payment_method": -3}"#,
            404,
            "no payment method -3 of this tenant",
        ),
        (
            "POST",
            key,
            "/billing/purchases".into(),
            r#"{"package": "pack-42"}"#,
            400,
            "there is no credit package \"pack-42\"",
        ),
        (
            "PUT",
            key,
            "/billing/subscriptions/plan".into(),
            r#"{"plan": "professional"}"#,
            404,
            "the tenant has no subscription",
        ),
        (
            "POST",
            key,
            "/billing/payment-methods".into(),
            r#"{"provider": "bank-transfer", "method": "bank_transfer", "label": " "}"#,
            400,
            "label: 1 to 100 bytes, not blank",
        ),
        (
            "POST",
            key,
            format!("/billing/invoices/{}/pay", server.acme_invoice),
            r#"{"payment_method": 1}"#,
            404,
            "no payment method 1 of this tenant",
        ),
    ];
    for (n, (method, caller, path, body, status, words)) in cases.into_iter().enumerate() {
        let body = body.replace("GLOBEX", &globex.to_string());
        let (got, answer) = server.call(
            method,
            caller,
            &path,
            Some(&body),
            &[("idempotency-key", &format!("bad-{n}"))],
        );
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{method} {path}: {message}");
    }
    let (_, credits) = server.get(key, "/billing/credits");
    assert_eq!(credits["balance"]["available"], "0");
    let (_, invoices) = server.get(key, "/billing/invoices");
    assert_eq!(invoices["invoices"], serde_json::json!([]));
    let (_, payments) = server.get(key, "/billing/payments");
    assert_eq!(payments["payments"], serde_json::json!([]));
}
