//! The analytics API end to end: usage visible as soon as a call settles,
//! platform-wide and per tenant; ROI; the revenue report and the monthly
//! financial report with their CSV exports; who may read what. On SQLite
//! or PostgreSQL (TEST_DATABASE_URL).

mod api_server;

use api_server::*;
use diesel::prelude::*;
use tollgate::db::DbConnection;
use tollgate::db::schema::{
    revenue_daily, revenue_monthly, usage_daily, usage_monthly, usage_platform_daily,
};

/// Every row of the usage and revenue rollups, in order.
fn rollups(server: &Server) -> Vec<String> {
    fn load(conn: &mut DbConnection) -> QueryResult<Vec<String>> {
        let mut rows: Vec<String> = Vec::new();
        macro_rules! all {
            ($name:literal, $query:expr, $ty:ty) => {{
                let loaded: Vec<$ty> = match conn {
                    DbConnection::Sqlite(c) => $query.load(c)?,
                    DbConnection::Postgres(c) => $query.load(c)?,
                };
                rows.extend(loaded.iter().map(|row| format!("{}: {row:?}", $name)));
            }};
        }
        {
            use usage_daily as t;
            all!(
                "usage_daily",
                t::table.select((
                    t::tenant_id,
                    t::day,
                    t::plugin,
                    t::function,
                    t::calls,
                    t::failed
                )),
                (i64, String, String, String, i64, i64)
            );
            all!(
                "usage_daily+",
                t::table.select((
                    t::tenant_id,
                    t::day,
                    t::units,
                    t::credits,
                    t::fuel,
                    t::duration_us
                )),
                (i64, String, i64, i64, i64, i64)
            );
        }
        {
            use usage_platform_daily as t;
            all!(
                "usage_platform_daily",
                t::table.select((
                    t::day,
                    t::plugin,
                    t::function,
                    t::calls,
                    t::failed,
                    t::units
                )),
                (String, String, String, i64, i64, i64)
            );
            all!(
                "usage_platform_daily+",
                t::table.select((t::day, t::plugin, t::credits, t::fuel, t::duration_us)),
                (String, String, i64, i64, i64)
            );
        }
        {
            use usage_monthly as t;
            all!(
                "usage_monthly",
                t::table.select((t::tenant_id, t::month, t::calls, t::credits)),
                (i64, String, i64, i64)
            );
        }
        {
            use revenue_daily as t;
            all!(
                "revenue_daily",
                t::table.select((
                    t::day,
                    t::currency,
                    t::source,
                    t::method,
                    t::invoices,
                    t::paid_minor
                )),
                (String, String, String, String, i64, i64)
            );
            all!(
                "revenue_daily+",
                t::table.select((
                    t::day,
                    t::method,
                    t::paid_tax_minor,
                    t::refunds,
                    t::refunded_minor,
                    t::refunded_tax_minor
                )),
                (String, String, i64, i64, i64, i64)
            );
        }
        {
            use revenue_monthly as t;
            all!(
                "revenue_monthly",
                t::table.select((
                    t::tenant_id,
                    t::month,
                    t::currency,
                    t::paid_minor,
                    t::refunded_minor
                )),
                (i64, String, String, i64, i64)
            );
        }
        rows.sort();
        Ok(rows)
    }
    load(&mut server.database.get().unwrap()).unwrap()
}

/// The analytics migration's backfill, run over what is in the database
/// now, rebuilds exactly the rollups the code kept as it went.
fn assert_backfill_matches(server: &Server) {
    let kept = rollups(server);
    assert!(!kept.is_empty());
    // Back to before the analytics migration (the later ones first), and
    // forward again.
    let mut reverted = Vec::new();
    while reverted.last().map(String::as_str) != Some("20261125000012") {
        reverted.push(server.database.revert_last().unwrap());
        assert!(reverted.len() <= 30, "{reverted:?}");
    }
    assert_eq!(server.database.migrate().unwrap().len(), reverted.len());
    assert_eq!(rollups(server), kept);
}

fn text(server: &Server, key: &str, path: &str) -> (u16, String, String) {
    let (status, content_type, body) = server.raw(key, path);
    (status, content_type, String::from_utf8(body).unwrap())
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[test]
fn a_call_is_in_the_usage_reports_as_soon_as_it_settles_and_only_its_tenant_sees_it() {
    let server = start();
    let acme = server.acme.0;
    let (status, first) = server.search(&server.acme_key, r#"{"limit": 7}"#);
    assert_eq!(status, 200, "{first}");
    // Read at once: no rollup job to wait for.
    let (status, usage) = server.get(&server.acme_key, "/usage");
    assert_eq!(status, 200, "{usage}");
    let day = &usage["usage"][0];
    assert_eq!(
        (
            &day["day"],
            &day["plugin"],
            &day["function"],
            &day["calls"],
            &day["failed"],
            &day["units"],
            &day["charged"]
        ),
        (
            &today().into(),
            &"csv-leads".into(),
            &"search".into(),
            &1.into(),
            &0.into(),
            &7.into(),
            &first["charged"]
        ),
        "{usage}"
    );
    let (_, second) = server.search(&server.acme_key, r#"{"limit": 5}"#);
    let (_, usage) = server.get(&server.acme_key, "/usage");
    assert_eq!(usage["by_function"][0]["calls"], 2);
    assert_eq!(usage["by_function"][0]["units"], 12);
    let charged: i64 = [&first, &second]
        .iter()
        .map(|body| body["charged"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(usage["by_function"][0]["charged"], charged.to_string());

    // The operator sees it platform-wide, and Acme's through tenant=.
    let (status, platform) = server.get(&server.operator_key, "/analytics/usage");
    assert_eq!(status, 200, "{platform}");
    assert_eq!(platform["by_function"][0]["calls"], 2);
    let (_, as_operator) = server.get(&server.operator_key, &format!("/usage?tenant={acme}"));
    assert_eq!(as_operator["usage"], usage["usage"]);
    let (status, body) = server.get(&server.operator_key, "/usage");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );

    // Globex sees none of it, and cannot ask for Acme's.
    let (_, theirs) = server.get(&server.globex_key, "/usage");
    assert_eq!(theirs["usage"], serde_json::json!([]));
    let (status, _) = server.get(&server.globex_key, &format!("/usage?tenant={acme}"));
    assert_eq!(status, 404);
    let (status, _) = server.get(&server.globex_key, &format!("/analytics/roi?tenant={acme}"));
    assert_eq!(status, 404);
    for path in [
        "/analytics/usage",
        "/billing/revenue",
        "/billing/reports/monthly",
    ] {
        let (status, body) = server.get(&server.acme_key, path);
        assert_eq!(status, 403, "{path}: {body}");
    }

    // CSV: the same rows.
    let (status, content_type, csv) = text(&server, &server.acme_key, "/usage?format=csv");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "day,plugin,function,calls,failed,units,charged,fuel,duration_us"
    );
    assert!(
        lines[1].starts_with(&format!("{},csv-leads,search,2,0,12,{charged},", today())),
        "{csv}"
    );

    // ROI at the defaults: 5 minutes a lead found, $40 an hour, $0.01 a
    // credit: 12 leads are an hour's work, $40, for 12 credits, $0.12.
    let (status, roi) = server.get(&server.acme_key, "/analytics/roi");
    assert_eq!(status, 200, "{roi}");
    assert_eq!(charged, 12, "csv-leads costs a credit a lead");
    assert_eq!(
        (
            &roi["manual_cost"],
            &roi["credits_cost"],
            &roi["saved"],
            &roi["hours_saved"]
        ),
        (
            &"40.00".into(),
            &"0.12".into(),
            &"39.88".into(),
            &"1.00".into()
        ),
        "{roi}"
    );
    let (status, _, csv) = text(&server, &server.acme_key, "/analytics/roi?format=csv");
    assert_eq!(status, 200);
    assert!(
        csv.contains(
            "csv-leads,search,lead found and researched by hand,12,60,40.00,12,0.12,39.88"
        ),
        "{csv}"
    );

    assert_backfill_matches(&server);

    for (path, code) in [
        ("/usage?from=2026-13-01", "invalid_parameter"),
        ("/usage?from=2026-02-01&to=2026-01-01", "invalid_parameter"),
        ("/usage?format=xml", "invalid_parameter"),
        ("/usage?colour=blue", "invalid_parameter"),
    ] {
        let (status, body) = server.get(&server.acme_key, path);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
}

#[test]
fn the_revenue_report_sums_paid_invoices_less_refunds_by_method_and_exports_csv() {
    let server = start();
    let globex = server.globex.0;
    let key = &server.globex_key;
    // Globex buys 500 credits by bank transfer; the operator records the
    // money arriving.
    let (status, saved) = server.call(
        "POST",
        key,
        "/billing/payment-methods",
        Some(r#"{"provider": "bank-transfer", "method": "bank_transfer"}"#),
        &[],
    );
    assert_eq!(status, 201, "{saved}");
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
    let invoice = bought["invoice"]["id"].as_i64().unwrap();
    let (status, paid) = server.call(
        "POST",
        &server.operator_key,
        &format!("/billing/invoices/{invoice}/payments"),
        Some(&format!(r#"{{"tenant": {globex}}}"#)),
        &[],
    );
    assert_eq!(status, 200, "{paid}");

    // January 2026 holds Acme's $49.00 invoice, recorded by hand, and its
    // $10.00 credit note; this month Globex's $5.00 package.
    let this_month = &today()[..7];
    let path = format!("/billing/revenue?from=2026-01&to={this_month}");
    let (status, report) = server.get(&server.operator_key, &path);
    assert_eq!(status, 200, "{report}");
    let revenue = &report["revenue"];
    assert_eq!(
        (
            &revenue["paid"],
            &revenue["refunded"],
            &revenue["revenue"],
            &revenue["tax"]
        ),
        (
            &"54.00".into(),
            &"10.00".into(),
            &"44.00".into(),
            &"8.80".into()
        ),
        "{report}"
    );
    assert_eq!(
        revenue["non_recurring"], "5.00",
        "a package is not recurring"
    );
    assert_eq!(report["series"][0]["period"], "2026-01");
    assert_eq!(report["series"][0]["revenue"], "39.00");
    let methods: Vec<(&str, &str)> = report["payment_methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["method"].as_str().unwrap(), m["paid"].as_str().unwrap()))
        .collect();
    assert_eq!(methods, [("bank_transfer", "5.00"), ("manual", "49.00")]);
    let top = &report["top_customers"];
    assert_eq!(
        (&top[0]["name"], &top[0]["revenue"]),
        (&"Acme".into(), &"39.00".into())
    );
    assert_eq!(
        (&top[1]["name"], &top[1]["revenue"]),
        (&"Globex".into(), &"5.00".into())
    );
    // No subscriptions: no MRR, and LTV says why it has no figure.
    assert_eq!(report["mrr"]["mrr"], "0.00");
    assert_eq!(report["mrr"]["ltv_basis"], "no customers");
    assert_eq!(
        report["mrr"]["arpu"], "22.00",
        "$44 over two paying tenants"
    );

    // The same tables as CSV.
    let (status, content_type, csv) = text(
        &server,
        &server.operator_key,
        &format!("{path}&format=csv&table=payment_methods"),
    );
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    assert_eq!(
        csv,
        "method,invoices_paid,paid,share\nbank_transfer,1,5.00,0.0926\nmanual,1,49.00,0.9074\n"
    );
    let (_, _, csv) = text(&server, &server.operator_key, &format!("{path}&format=csv"));
    assert!(csv.starts_with("month,mrr_start,new_mrr,"), "{csv}");
    assert_eq!(
        csv.lines().count(),
        1 + report["mrr"]["months"].as_array().unwrap().len()
    );

    // The monthly financial report for January.
    let (status, monthly) = server.get(
        &server.operator_key,
        "/billing/reports/monthly?month=2026-01",
    );
    assert_eq!(status, 200, "{monthly}");
    assert_eq!(monthly["revenue"]["revenue"], "39.00");
    assert_eq!(monthly["complete"], true);
    let (_, _, csv) = text(
        &server,
        &server.operator_key,
        "/billing/reports/monthly?month=2026-01&format=csv",
    );
    assert!(csv.starts_with("section,item,value\n"), "{csv}");
    assert!(csv.contains("revenue,refunded,10.00\n"), "{csv}");
    assert!(csv.contains("payment_method:manual,paid,49.00\n"), "{csv}");

    assert_backfill_matches(&server);

    for (query, code) in [
        ("from=2026-02&to=2026-01", "invalid_parameter"),
        ("from=January", "invalid_parameter"),
        ("granularity=hour", "invalid_parameter"),
        ("format=csv&table=nope", "invalid_parameter"),
        ("table=months", "invalid_parameter"),
        ("currency=XYZ1", "invalid_parameter"),
    ] {
        let (status, body) = server.get(&server.operator_key, &format!("/billing/revenue?{query}"));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
}

#[test]
fn every_list_a_tenant_reads_is_also_csv() {
    let server = start();
    for _ in 0..2 {
        let (status, _) = server.search(&server.acme_key, r#"{"limit": 3}"#);
        assert_eq!(status, 200);
    }
    let key = &server.acme_key;
    let (_, _, csv) = text(&server, key, "/billing/credits/transactions?format=csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,kind,amount,hold,memo,created_at");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("grant-acme,grant,100,")),
        "{csv}"
    );
    let (_, _, csv) = text(&server, key, "/usage/records?format=csv");
    assert!(
        csv.starts_with("call_id,plugin,version,function,units,charged,"),
        "{csv}"
    );
    assert!(csv.lines().nth(1).unwrap().contains(",csv-leads,"), "{csv}");
    let (_, _, csv) = text(&server, key, "/billing/invoices?format=csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,number,state,currency,subtotal,tax_name,tax_rate,tax,total,credits_invoice,created_at,finalized_at,closed_at"
    );
    assert!(
        lines[1].contains(",paid,USD,49.00,VAT,0.2,9.80,58.80,"),
        "{csv}"
    );
    let (_, _, csv) = text(&server, key, "/billing/credit-notes?format=csv");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .contains(",10.00,VAT,0.2,2.00,12.00,"),
        "{csv}"
    );
    // A page at a time, the next cursor in a header.
    let (status, _, first) = server.raw(key, "/usage/records?format=csv&limit=1");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(first).unwrap().lines().count(), 2);
}
