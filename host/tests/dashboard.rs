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
