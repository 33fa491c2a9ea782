//! The web dashboard end to end in headless Chromium: `e2e/dashboard.mjs`
//! (playwright-core driving Debian's chromium) against a server with two
//! tenants, a card gateway that approves, and Acme's leads, sequence and
//! pipeline. The script signs in, buys a package with the test card,
//! downloads the invoice PDF, imports a CSV, drags a deal, and checks that
//! pages refuse another tenant's objects and a member the operator's pages;
//! this test then checks what the browser did against the database.
//!
//! Needs `node` (with `npm ci --prefix e2e` done) and `/usr/bin/chromium`
//! (or `CHROMIUM`); `scripts/test` installs both. Without them it fails,
//! never skips.

mod api_server;
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::prelude::*;
use tollgate::auth::Role;
use tollgate::db::schema::deals;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn approved(n: u32) -> (u16, String) {
    (200, format!(r#"{{"id": "pi_{n}", "status": "succeeded"}}"#))
}

#[test]
fn the_dashboard_works_in_a_browser() {
    let root = repo_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (scripts/test does), or set CHROMIUM"
    );
    assert!(
        root.join("e2e/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix e2e` (scripts/test does)"
    );
    let gateway = support::FakeServer::start((1..=10).map(approved).collect());
    let server = api_server::start_with_card_gateway(&gateway.base_url());
    let origin = server.base.trim_end_matches("/api/v1").to_owned();
    let screenshots = root.join("target/screenshots/dashboard");
    let _ = std::fs::remove_dir_all(&screenshots);
    let output = Command::new("node")
        .arg(root.join("e2e/dashboard.mjs"))
        .current_dir(root.join("e2e"))
        .env("BASE", &origin)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .env(
            "ACME_ADMIN_KEY",
            server.tenant_key(server.acme, Role::Admin),
        )
        .env("ACME_MEMBER_KEY", &server.acme_key)
        .env("GLOBEX_KEY", &server.globex_key)
        .env("OPERATOR_KEY", &server.operator_key)
        .env("ACME_LEAD", server.acme_lead.to_string())
        .env("ACME_SEQUENCE", server.acme_sequence.to_string())
        .env("ACME_PIPELINE", server.acme_pipeline.to_string())
        .env("ACME_DEAL", server.acme_deal.to_string())
        .output()
        .expect("node runs (install Node.js 20 or later)");
    assert!(
        output.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The invoice the browser downloaded is a real PDF of a paid invoice.
    let pdf = std::fs::read(screenshots.join("invoice.pdf")).unwrap();
    let text = api_server::pdftotext(&pdf);
    assert!(text.contains("Acme"), "{text}");
    assert!(text.to_lowercase().contains("paid"), "{text}");

    // The card was charged once, for the one package.
    let charges: Vec<_> = gateway
        .requests()
        .into_iter()
        .filter(|request| request.path.contains("payment_intents"))
        .collect();
    assert_eq!(charges.len(), 1, "{charges:?}");

    // The dragged deal is in its new stage in the database.
    let moved = std::fs::read_to_string(screenshots.join("moved.txt")).unwrap();
    let (deal, stage) = moved.trim().split_once(' ').unwrap();
    let mut conn = server.database.get().unwrap();
    let in_stage: i64 = deals::table
        .find(deal.parse::<i64>().unwrap())
        .select(deals::stage_id)
        .first(&mut conn)
        .unwrap();
    assert_eq!(in_stage.to_string(), stage);

    // Every page was captured at both widths.
    for name in [
        "credits", "invoices", "leads", "board", "sequence", "plugins", "revenue",
    ] {
        for width in [1280, 390] {
            let shot = screenshots.join(format!("{name}-{width}.png"));
            assert!(shot.exists(), "no screenshot {}", shot.display());
        }
    }
}

/// A 1×1 PNG, for the brand's logo.
const PIXEL_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

#[test]
fn a_resellers_tenant_sees_its_brand_on_its_domain_and_in_its_invoice_pdf() {
    let root = repo_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (scripts/test does), or set CHROMIUM"
    );
    let server = api_server::start();
    let operator = server.operator_key.clone();
    let call = |key: &str, method: &str, path: &str, body: &str| {
        let (status, answer) = server.call(method, key, path, Some(body), &[]);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    };
    let north = call(&operator, "POST", "/resellers", r#"{"name": "North"}"#)["id"]
        .as_i64()
        .unwrap();
    let north_key = call(
        &operator,
        "POST",
        &format!("/tenants/{north}/keys"),
        r#"{"role": "reseller", "name": "agency"}"#,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let brand = serde_json::json!({
        "name": "North Agency Ltd",
        "address": "2 Harbour Road\nPortsmouth PO1 3AA",
        "tax_id": "GB123456789",
        "support_email": "help@north.example",
        "primary_color": "#7a1f5c",
        "accent_color": "#f2a900",
        "logo": {"content_type": "image/png", "base64": PIXEL_PNG_BASE64},
        "domain": "app.north.example",
    });
    let stored = call(
        &north_key,
        "PUT",
        &format!("/resellers/{north}/branding"),
        &brand.to_string(),
    );
    assert_eq!(stored["set"], true);
    call(
        &north_key,
        "PUT",
        &format!("/resellers/{north}/pricing"),
        r#"{"markup_percent": "30"}"#,
    );
    let alpha = call(
        &north_key,
        "POST",
        &format!("/resellers/{north}/tenants"),
        r#"{"name": "Alpha"}"#,
    )["id"]
        .as_i64()
        .unwrap();
    let alpha_key = call(
        &north_key,
        "POST",
        &format!("/tenants/{alpha}/keys"),
        r#"{"role": "admin", "name": "alpha admin"}"#,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let subscribed = call(
        &alpha_key,
        "POST",
        "/billing/subscriptions",
        r#"{"plan": "starter"}"#,
    );
    let invoice = &subscribed["invoice"];
    assert_eq!(invoice["issuer"], "North Agency Ltd", "{subscribed}");
    // The reseller's own series: its first invoice.
    assert_eq!(invoice["number"], "INV-000001", "{subscribed}");

    let port = server
        .base
        .trim_start_matches("http://")
        .split(['/', ':'])
        .nth(1)
        .unwrap()
        .to_owned();
    let screenshots = root.join("target/screenshots/branding");
    let _ = std::fs::remove_dir_all(&screenshots);
    let output = Command::new("node")
        .arg(root.join("e2e/branding.mjs"))
        .current_dir(root.join("e2e"))
        .env("DOMAIN", "app.north.example")
        .env("PORT", &port)
        .env("BRAND", "North Agency Ltd")
        .env("PRIMARY", "#7a1f5c")
        .env("SUPPORT", "help@north.example")
        .env("TENANT_KEY", &alpha_key)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (install Node.js 20 or later)");
    assert!(
        output.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The PDF the browser downloaded through the reseller's domain is the
    // reseller's invoice, at retail, and never names the platform.
    let pdf = std::fs::read(screenshots.join("invoice.pdf")).unwrap();
    let text = api_server::pdftotext(&pdf);
    for expected in [
        "North Agency Ltd",
        "2 Harbour Road",
        "Portsmouth PO1 3AA",
        "Tax ID GB123456789",
        "Alpha",
        "63.70",
        "INV-000001",
    ] {
        assert!(
            text.contains(expected),
            "the PDF lacks {expected:?}: {text}"
        );
    }
    assert!(!text.to_lowercase().contains("tollgate"), "{text}");
    assert!(!text.contains("49.00"), "{text}");

    // The platform's own tenant still sees the platform on the platform's
    // host, and another reseller's domain is refused as a brand.
    let (status, refused) = server.call(
        "PUT",
        &operator,
        &format!("/resellers/{north}/branding"),
        Some(r#"{"name": "Tollgate"}"#),
        &[],
    );
    assert_eq!(status, 422, "{refused}");
    let south = call(&operator, "POST", "/resellers", r#"{"name": "South"}"#)["id"]
        .as_i64()
        .unwrap();
    let (status, taken) = server.call(
        "PUT",
        &operator,
        &format!("/resellers/{south}/branding"),
        Some(r#"{"name": "South Ltd", "domain": "APP.north.example"}"#),
        &[],
    );
    assert_eq!(status, 409, "{taken}");
    assert_eq!(taken["error"]["code"], "domain_taken");
    // Nor may a reseller take the platform's own host.
    let (status, refused) = server.call(
        "PUT",
        &operator,
        &format!("/resellers/{south}/branding"),
        Some(r#"{"name": "South Ltd", "domain": "127.0.0.1"}"#),
        &[],
    );
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the platform's own host")
    );
}
