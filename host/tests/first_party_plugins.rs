//! The first-party plugins in `plugins/`, each through the real runtime.

use tollgate::runtime::{
    Call, CallContext, CallError, Callback, ErrorKind, Field, Limits, LoadedPlugin, Method,
    PaymentEventKind, PaymentRequest, PaymentStatus, PluginKind, PriceRequest, RefundRequest,
    Reply, Runtime, RuntimeConfig, artifacts,
};

fn load(runtime: &Runtime, name: &str, kind: PluginKind) -> LoadedPlugin {
    let wasm = std::fs::read(artifacts::path(name).unwrap()).unwrap();
    runtime
        .load(name, "0.1.0", kind, &wasm, Limits::DEFAULT)
        .unwrap()
}

fn context(settings: &[(&str, &str)]) -> CallContext {
    let mut context = CallContext::new("tenant-1");
    for (name, value) in settings {
        context.settings.insert(name.to_string(), value.to_string());
    }
    context
}

fn price(base: u64, units: u64, period_units: u64) -> Call {
    Call::AdjustPrice(PriceRequest {
        plan: Some("starter".into()),
        plugin: "http-leads".into(),
        function: "search".into(),
        units,
        period_units,
        base_price_micros: base,
    })
}

fn plugin_error(result: Result<Reply, CallError>) -> (ErrorKind, String) {
    match result {
        Err(CallError::Plugin { error, .. }) => (error.kind, error.message),
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

#[test]
fn volume_discount_applies_the_tier_the_period_has_reached() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = load(&runtime, "volume-discount", PluginKind::PricingRule);
    let tiers = context(&[("tiers", "10000:10, 1000:5")]);
    let check = |base, units, period_units, expect: (u64, Option<&str>)| match runtime
        .invoke(&plugin, tiers.clone(), price(base, units, period_units))
        .result
    {
        Ok(Reply::Price(price)) => assert_eq!((price.price_micros, price.note.as_deref()), expect),
        other => panic!("{other:?}"),
    };
    check(1_000_000, 1, 0, (1_000_000, None));
    check(1_000_000, 1, 998, (1_000_000, None));
    // The call that reaches the threshold gets the discount.
    check(
        1_000_000,
        1,
        999,
        (
            950_000,
            Some("5% volume discount from 1000 units this period"),
        ),
    );
    check(
        1_000_000,
        5,
        20_000,
        (
            900_000,
            Some("10% volume discount from 10000 units this period"),
        ),
    );
    // Half a millionth rounds up: 15 x 0.95 = 14.25 -> 14; 7 x 0.9 = 6.3 -> 6; 5 x 0.9 = 4.5 -> 5.
    check(
        15,
        1,
        1_000,
        (14, Some("5% volume discount from 1000 units this period")),
    );
    check(
        5,
        1,
        10_000,
        (5, Some("10% volume discount from 10000 units this period")),
    );

    let (kind, message) = plugin_error(
        runtime
            .invoke(&plugin, context(&[("tiers", "lots")]), price(1, 1, 1))
            .result,
    );
    assert_eq!(
        (kind, message.as_str()),
        (
            ErrorKind::Misconfigured,
            "tier \"lots\" is not units:percent"
        )
    );
    let (_, message) = plugin_error(
        runtime
            .invoke(&plugin, context(&[("tiers", "10:150")]), price(1, 1, 1))
            .result,
    );
    assert_eq!(message, "tier \"10:150\": more than 100% off");
    let (kind, message) =
        plugin_error(runtime.invoke(&plugin, context(&[]), price(1, 1, 1)).result);
    assert_eq!(
        (kind, message.as_str()),
        (
            ErrorKind::Misconfigured,
            "setting \"tiers\" is not set for this plugin"
        )
    );
}

const BANK: [(&str, &str); 4] = [
    ("account_name", "Acme Reseller Ltd"),
    ("iban", "GB33BUKB20201555555555"),
    ("bic", "BUKBGB22"),
    ("callback_secret", "s3cret"),
];

fn payment(method: Method, key: &str) -> Call {
    Call::CreatePayment(PaymentRequest {
        amount_minor: 4_900,
        currency: "USD".into(),
        method,
        payment_method_token: None,
        customer_reference: "tenant-1".into(),
        description: "Starter plan, December".into(),
        idempotency_key: key.into(),
    })
}

fn confirmation(body: &str, signature: Option<String>) -> Call {
    Call::PaymentCallback(Callback {
        headers: signature
            .into_iter()
            .map(|value| Field {
                name: "X-Tollgate-Signature".into(),
                value,
            })
            .collect(),
        body: body.as_bytes().to_vec(),
    })
}

#[test]
fn bank_transfer_payments_wait_for_a_signed_confirmation() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = load(&runtime, "bank-transfer", PluginKind::PaymentProvider);
    let settings = context(&BANK);
    let created = match runtime
        .invoke(
            &plugin,
            settings.clone(),
            payment(Method::BankTransfer, "inv-1"),
        )
        .result
    {
        Ok(Reply::Payment(payment)) => payment,
        other => panic!("{other:?}"),
    };
    assert_eq!(created.status, PaymentStatus::Pending);
    assert_eq!(created.units, 1);
    assert!(
        created.provider_reference.starts_with("BT-"),
        "{}",
        created.provider_reference
    );
    assert_eq!(
        created.instructions.as_deref(),
        Some(format!(
            "Transfer 49.00 USD to Acme Reseller Ltd, IBAN GB33BUKB20201555555555, BIC BUKBGB22, quoting the reference {}.",
            created.provider_reference
        ).as_str())
    );
    // A retry with the same key gets the same reference; another key another.
    let again = runtime
        .invoke(
            &plugin,
            settings.clone(),
            payment(Method::BankTransfer, "inv-1"),
        )
        .result
        .unwrap();
    let other = runtime
        .invoke(
            &plugin,
            settings.clone(),
            payment(Method::BankTransfer, "inv-2"),
        )
        .result
        .unwrap();
    match (again, other) {
        (Reply::Payment(again), Reply::Payment(other)) => {
            assert_eq!(again.provider_reference, created.provider_reference);
            assert_ne!(other.provider_reference, created.provider_reference);
        }
        other => panic!("{other:?}"),
    }
    let (kind, message) = plugin_error(
        runtime
            .invoke(&plugin, settings.clone(), payment(Method::Card, "inv-3"))
            .result,
    );
    assert_eq!(
        (kind, message.as_str()),
        (
            ErrorKind::InvalidInput,
            "bank-transfer takes bank transfers only, not card"
        )
    );

    let body = format!(
        "event_id=ev-1&reference={}&status=succeeded&amount_minor=4900&currency=USD",
        created.provider_reference
    );
    let signed = confirmation(
        &body,
        Some(support::hmac_sha256_hex(b"s3cret", body.as_bytes())),
    );
    match runtime.invoke(&plugin, settings.clone(), signed).result {
        Ok(Reply::PaymentEvents(events)) => {
            assert_eq!(events.events.len(), 1);
            let event = &events.events[0];
            assert_eq!(event.kind, PaymentEventKind::Succeeded);
            assert_eq!(event.provider_reference, created.provider_reference);
            assert_eq!(
                (event.amount_minor, event.currency.as_deref()),
                (Some(4_900), Some("USD"))
            );
            assert_eq!(event.event_id, "ev-1");
        }
        other => panic!("{other:?}"),
    }
    let forged = confirmation(
        &body,
        Some(support::hmac_sha256_hex(b"guess", body.as_bytes())),
    );
    let (kind, message) = plugin_error(runtime.invoke(&plugin, settings.clone(), forged).result);
    assert_eq!(
        (kind, message.as_str()),
        (
            ErrorKind::Unauthorized,
            "the signature does not match the body"
        )
    );
    let unsigned = confirmation(&body, None);
    assert_eq!(
        plugin_error(runtime.invoke(&plugin, settings.clone(), unsigned).result).0,
        ErrorKind::Unauthorized
    );

    let refund = Call::Refund(RefundRequest {
        provider_reference: created.provider_reference.clone(),
        amount_minor: 1_000,
        currency: "USD".into(),
        idempotency_key: "refund-1".into(),
    });
    match runtime.invoke(&plugin, settings, refund).result {
        Ok(Reply::Refund(refund)) => {
            assert_eq!(refund.status, PaymentStatus::Pending);
            assert!(refund.provider_reference.starts_with("BTR-"));
        }
        other => panic!("{other:?}"),
    }
}

mod support;

fn search(keywords: &str, cursor: Option<&str>) -> Call {
    Call::Search(tollgate::runtime::SearchQuery {
        keywords: Some(keywords.into()),
        title: Some("VP Sales".into()),
        company: None,
        domain: Some("example.com".into()),
        location: None,
        limit: 2,
        cursor: cursor.map(str::to_owned),
    })
}

fn http_leads_context(server: &support::FakeServer) -> CallContext {
    let mut context = context(&[("api_key", "key-123"), ("api_base_url", &server.base_url())]);
    context.http.allowed_hosts = vec![server.addr.to_string()];
    context
}

const PEOPLE_PAGE_1: &str = r#"{
  "people": [
    {"id": "p1", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
     "title": "VP Sales", "linkedin_url": "https://www.linkedin.com/in/ada",
     "city": "London", "country": "United Kingdom", "time_zone": "Europe/London",
     "organization": {"name": "Example Ltd", "primary_domain": "example.com"}},
    {"id": "p2", "first_name": "Grace", "title": "VP Sales Ops"}
  ],
  "pagination": {"page": 1, "total_pages": 2}
}"#;

#[test]
fn http_leads_searches_pages_and_enriches_through_the_host() {
    let server = support::FakeServer::start(vec![
        (200, PEOPLE_PAGE_1.to_owned()),
        (
            200,
            r#"{"people": [], "pagination": {"page": 2, "total_pages": 2}}"#.to_owned(),
        ),
        (
            200,
            r#"{"person": {"id": "p1", "first_name": "Ada", "phone_number": "+442071234567"}}"#
                .to_owned(),
        ),
        (200, r#"{"person": null}"#.to_owned()),
        (401, r#"{"error": "bad key"}"#.to_owned()),
        (429, r#"{"error": "slow down"}"#.to_owned()),
    ]);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = load(&runtime, "http-leads", PluginKind::LeadSource);
    let context = http_leads_context(&server);

    let page = match runtime
        .invoke(&plugin, context.clone(), search("saas", None))
        .result
    {
        Ok(Reply::SearchPage(page)) => page,
        other => panic!("{other:?}"),
    };
    assert_eq!(page.units, 2);
    assert_eq!(page.next_cursor.as_deref(), Some("2"));
    let ada = &page.leads[0];
    assert_eq!(
        (
            ada.first_name.as_deref(),
            ada.email.as_deref(),
            ada.company.as_deref(),
            ada.domain.as_deref()
        ),
        (
            Some("Ada"),
            Some("ada@example.com"),
            Some("Example Ltd"),
            Some("example.com")
        )
    );
    assert_eq!(ada.location.as_deref(), Some("London, United Kingdom"));
    assert_eq!(ada.time_zone.as_deref(), Some("Europe/London"));
    assert_eq!(ada.custom_fields[0].value, "p1");
    let last = match runtime
        .invoke(&plugin, context.clone(), search("saas", Some("2")))
        .result
    {
        Ok(Reply::SearchPage(page)) => page,
        other => panic!("{other:?}"),
    };
    assert_eq!((last.units, last.next_cursor), (0, None));

    let lead = page.leads[0].clone();
    match runtime
        .invoke(&plugin, context.clone(), Call::Enrich(lead.clone()))
        .result
    {
        Ok(Reply::Enrichment(found)) => {
            assert_eq!(found.units, 1);
            assert_eq!(found.lead.unwrap().phone.as_deref(), Some("+442071234567"));
        }
        other => panic!("{other:?}"),
    }
    match runtime
        .invoke(&plugin, context.clone(), Call::Enrich(lead.clone()))
        .result
    {
        Ok(Reply::Enrichment(nothing)) => assert_eq!((nothing.units, nothing.lead), (0, None)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plugin_error(
            runtime
                .invoke(&plugin, context.clone(), search("x", None))
                .result
        )
        .0,
        ErrorKind::Unauthorized
    );
    let rate_limited = runtime
        .invoke(&plugin, context.clone(), search("x", None))
        .result;
    match rate_limited {
        Err(CallError::Plugin { error, .. }) => {
            assert!(error.kind == ErrorKind::RateLimited && error.retryable)
        }
        other => panic!("{other:?}"),
    }

    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("POST", "/v1/mixed_people/search")
    );
    assert_eq!(requests[0].header("x-api-key"), Some("key-123"));
    let body: serde_json::Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(body["q_keywords"], "saas");
    assert_eq!(body["person_titles"], serde_json::json!(["VP Sales"]));
    assert_eq!(body["per_page"], 2);
    assert_eq!(body["page"], 1);
    let body: serde_json::Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(body["page"], 2);
    assert_eq!(requests[2].path, "/v1/people/match");
}

#[test]
fn http_leads_cannot_reach_a_host_that_was_not_approved() {
    let server = support::FakeServer::start(vec![]);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = load(&runtime, "http-leads", PluginKind::LeadSource);
    let mut context = http_leads_context(&server);
    context.http.allowed_hosts = vec!["api.apollo.io".into()];
    let (kind, message) = plugin_error(runtime.invoke(&plugin, context, search("x", None)).result);
    assert_eq!(kind, ErrorKind::Misconfigured);
    assert_eq!(
        message,
        format!(
            "host \"{}\" is not among the hosts this plugin may reach",
            server.addr
        )
    );
    assert!(server.requests().is_empty());
}

fn card_payment(token: Option<&str>, key: &str) -> Call {
    Call::CreatePayment(PaymentRequest {
        amount_minor: 4_900,
        currency: "USD".into(),
        method: Method::Card,
        payment_method_token: token.map(str::to_owned),
        customer_reference: "tenant-1".into(),
        description: "Starter plan".into(),
        idempotency_key: key.into(),
    })
}

fn paid(result: Result<Reply, CallError>) -> tollgate::runtime::Payment {
    match result {
        Ok(Reply::Payment(payment)) => payment,
        other => panic!("expected a payment, got {other:?}"),
    }
}

#[test]
fn card_payments_succeed_decline_or_ask_for_a_retry() {
    let server = support::FakeServer::start(vec![
        (200, r#"{"id": "pi_1", "status": "succeeded"}"#.to_owned()),
        (402, r#"{"error": {"type": "card_error", "code": "card_declined", "message": "Your card was declined.", "payment_intent": {"id": "pi_2"}}}"#.to_owned()),
        (500, r#"{"error": {"message": "try again"}}"#.to_owned()),
        (200, r#"{"id": "pi_3", "status": "requires_action"}"#.to_owned()),
        (200, r#"{"id": "re_1", "status": "succeeded"}"#.to_owned()),
    ]);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = load(&runtime, "card", PluginKind::PaymentProvider);
    let mut settings = context(&[
        ("secret_key", "sk_test_1"),
        ("webhook_secret", "whsec_1"),
        ("api_base_url", &server.base_url()),
    ]);
    settings.http.allowed_hosts = vec![server.addr.to_string()];

    let ok = paid(
        runtime
            .invoke(
                &plugin,
                settings.clone(),
                card_payment(Some("tok_visa"), "inv-1"),
            )
            .result,
    );
    assert_eq!(
        (ok.provider_reference.as_str(), ok.status, ok.units),
        ("pi_1", PaymentStatus::Succeeded, 1)
    );
    let declined = paid(
        runtime
            .invoke(
                &plugin,
                settings.clone(),
                card_payment(Some("tok_declined"), "inv-2"),
            )
            .result,
    );
    assert_eq!(declined.status, PaymentStatus::Failed);
    assert_eq!(declined.provider_reference, "pi_2");
    assert_eq!(
        declined.failure_reason.as_deref(),
        Some("card_declined: Your card was declined.")
    );
    match runtime
        .invoke(
            &plugin,
            settings.clone(),
            card_payment(Some("tok_visa"), "inv-3"),
        )
        .result
    {
        Err(CallError::Plugin { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::Upstream);
            assert!(error.retryable);
        }
        other => panic!("{other:?}"),
    }
    let challenged = paid(
        runtime
            .invoke(
                &plugin,
                settings.clone(),
                card_payment(Some("tok_3ds"), "inv-4"),
            )
            .result,
    );
    assert_eq!(challenged.status, PaymentStatus::Pending);
    assert!(challenged.instructions.unwrap().contains("authenticate"));
    let refund = Call::Refund(RefundRequest {
        provider_reference: "pi_1".into(),
        amount_minor: 900,
        currency: "USD".into(),
        idempotency_key: "refund-1".into(),
    });
    match runtime.invoke(&plugin, settings.clone(), refund).result {
        Ok(Reply::Refund(refund)) => assert_eq!(
            (refund.provider_reference.as_str(), refund.status),
            ("re_1", PaymentStatus::Succeeded)
        ),
        other => panic!("{other:?}"),
    }
    let (_, message) = plugin_error(
        runtime
            .invoke(&plugin, settings.clone(), card_payment(None, "inv-5"))
            .result,
    );
    assert_eq!(message, "a card payment needs a saved card's token");

    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0].path, "/v1/payment_intents");
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer sk_test_1")
    );
    assert_eq!(requests[0].header("idempotency-key"), Some("inv-1"));
    assert_eq!(
        requests[0].body,
        "amount=4900&currency=usd&customer=tenant-1&payment_method=tok_visa&description=Starter%20plan&confirm=true"
    );
    assert_eq!(
        (requests[4].path.as_str(), requests[4].body.as_str()),
        ("/v1/refunds", "payment_intent=pi_1&amount=900")
    );
}

fn stripe_webhook(body: &str, secret: &[u8], timestamp: u64) -> Call {
    let signed = format!("{timestamp}.{body}");
    let signature = support::hmac_sha256_hex(secret, signed.as_bytes());
    Call::PaymentCallback(Callback {
        headers: vec![Field {
            name: "Stripe-Signature".into(),
            value: format!("t={timestamp},v1={signature}"),
        }],
        body: body.as_bytes().to_vec(),
    })
}

#[test]
fn card_webhooks_are_verified_before_they_are_believed() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = load(&runtime, "card", PluginKind::PaymentProvider);
    let settings = context(&[("secret_key", "sk"), ("webhook_secret", "whsec_1")]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = r#"{"id": "evt_1", "type": "charge.refunded", "data": {"object": {"id": "ch_1", "amount": 900, "currency": "usd", "payment_intent": "pi_1"}}}"#;
    match runtime
        .invoke(
            &plugin,
            settings.clone(),
            stripe_webhook(body, b"whsec_1", now),
        )
        .result
    {
        Ok(Reply::PaymentEvents(events)) => {
            let event = &events.events[0];
            assert_eq!(event.kind, PaymentEventKind::Refunded);
            assert_eq!(
                (event.provider_reference.as_str(), event.event_id.as_str()),
                ("pi_1", "evt_1")
            );
            assert_eq!(
                (event.amount_minor, event.currency.as_deref()),
                (Some(900), Some("USD"))
            );
        }
        other => panic!("{other:?}"),
    }
    let forged = plugin_error(
        runtime
            .invoke(
                &plugin,
                settings.clone(),
                stripe_webhook(body, b"guess", now),
            )
            .result,
    );
    assert_eq!(
        forged,
        (
            ErrorKind::Unauthorized,
            "the signature does not match the body".to_owned()
        )
    );
    let replayed = plugin_error(
        runtime
            .invoke(
                &plugin,
                settings.clone(),
                stripe_webhook(body, b"whsec_1", now - 3_600),
            )
            .result,
    );
    assert_eq!(
        replayed,
        (
            ErrorKind::Unauthorized,
            "the webhook is too old (or from the future)".to_owned()
        )
    );
    let other =
        r#"{"id": "evt_2", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}"#;
    match runtime
        .invoke(&plugin, settings, stripe_webhook(other, b"whsec_1", now))
        .result
    {
        Ok(Reply::PaymentEvents(events)) => assert!(events.events.is_empty()),
        other => panic!("{other:?}"),
    }
}
