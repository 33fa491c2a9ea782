//! Plugins whose state lives in the database: csv-leads reading files a
//! tenant uploaded, and a WIT 0.2 plugin listing its store, beside 0.1
//! plugins in the same runtime.

use std::sync::Arc;

use tollgate::db::testing::TestDatabase;
use tollgate::ids::TenantId;
use tollgate::plugins::kv::{self, DbKv};
use tollgate::runtime::{
    Call, CallContext, CallError, ErrorKind, KvStore, Limits, LoadedPlugin, PluginKind,
    PriceRequest, Reply, Runtime, RuntimeConfig, SearchPage, SearchQuery, artifacts,
};
use tollgate::tenants;
use tollgate::units::{Credits, SystemClock, Timestamp};

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

fn load(runtime: &Runtime, name: &str, kind: PluginKind, limits: Limits) -> LoadedPlugin {
    let wasm = std::fs::read(artifacts::path(name).unwrap()).unwrap();
    runtime.load(name, "0.1.0", kind, &wasm, limits).unwrap()
}

fn query(
    keywords: Option<&str>,
    location: Option<&str>,
    limit: u32,
    cursor: Option<String>,
) -> Call {
    Call::Search(SearchQuery {
        keywords: keywords.map(str::to_owned),
        title: None,
        company: None,
        domain: None,
        location: location.map(str::to_owned),
        limit,
        cursor,
    })
}

fn page(result: Result<Reply, CallError>) -> SearchPage {
    match result {
        Ok(Reply::SearchPage(page)) => page,
        other => panic!("expected a page of leads, got {other:?}"),
    }
}

struct Setup {
    database: tollgate::db::Database,
    tenant: TenantId,
    _db: TestDatabase,
}

fn setup() -> Setup {
    let db = TestDatabase::new();
    let database = db.open();
    let mut conn = database.get().unwrap();
    let (tenant, _) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
    Setup {
        database: database.clone(),
        tenant: tenant.id,
        _db: db,
    }
}

fn context(s: &Setup, plugin: &str) -> CallContext {
    let mut context = CallContext::new("acme");
    context.kv = Arc::new(DbKv::new(
        s.database.clone(),
        s.tenant,
        plugin,
        Arc::new(SystemClock),
    ));
    context
}

/// A CSV of `n` leads: every third in Berlin, the rest in Paris.
fn leads_csv(n: usize) -> String {
    let mut csv = String::from("First Name,Last Name,Email,Title,Company,City\n");
    for i in 0..n {
        let city = if i % 3 == 0 { "Berlin" } else { "Paris" };
        csv.push_str(&format!(
            "Lead{i},Person,lead{i}@company{}.example,Head of Sales,Company {},{city}\n",
            i % 50,
            i % 50
        ));
    }
    csv
}

#[test]
fn csv_leads_searches_a_ten_thousand_row_upload_page_by_page() {
    let s = setup();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let manifest = tollgate::plugins::Manifest::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../plugins/csv-leads/plugin.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    let plugin = load(
        &runtime,
        "csv-leads",
        PluginKind::LeadSource,
        manifest.limits,
    );
    let mut conn = s.database.get().unwrap();
    let csv = leads_csv(10_000);
    assert!(csv.len() > 3 * 64 * 1024, "the file spans several chunks");
    kv::put_file(
        &mut conn,
        s.tenant,
        "csv-leads",
        "leads.csv",
        csv.as_bytes(),
        NOW,
    )
    .unwrap();

    // Every third lead is in Berlin: 3,334 of them, in pages of 1,000.
    let mut cursor = None;
    let mut names = Vec::new();
    loop {
        let page = page(
            runtime
                .invoke(
                    &plugin,
                    context(&s, "csv-leads"),
                    query(None, Some("berlin"), 1_000, cursor),
                )
                .result,
        );
        assert_eq!(page.units, page.leads.len() as u64);
        names.extend(page.leads.into_iter().map(|lead| lead.first_name.unwrap()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(names.len(), 3_334);
    assert_eq!(names[0], "Lead0");
    assert_eq!(names[3_333], "Lead9999");

    // Keywords match anywhere: lead 4,243 (in Paris) is the one with this email.
    let found = page(
        runtime
            .invoke(
                &plugin,
                context(&s, "csv-leads"),
                query(Some("lead4243@company43.example"), None, 10, None),
            )
            .result,
    );
    assert_eq!(found.leads.len(), 1);
    assert_eq!(found.leads[0].location.as_deref(), Some("Paris"));

    // Another tenant has uploaded nothing.
    let (other, _) = tenants::create(&mut conn, "Globex", None, Credits::ZERO, NOW).unwrap();
    let mut globex = context(&s, "csv-leads");
    globex.kv = Arc::new(DbKv::new(
        s.database.clone(),
        other.id,
        "csv-leads",
        Arc::new(SystemClock),
    ));
    match runtime
        .invoke(&plugin, globex, query(None, None, 10, None))
        .result
    {
        Err(CallError::Plugin { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::Misconfigured);
            assert!(
                error.message.starts_with("no CSV file is uploaded"),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_v0_2_plugin_lists_its_store_beside_v0_1_plugins() {
    let s = setup();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let v2 = load(
        &runtime,
        "fixture-v0-2",
        PluginKind::LeadSource,
        Limits::DEFAULT,
    );
    let v1 = load(&runtime, "markup", PluginKind::PricingRule, Limits::DEFAULT);
    assert_eq!(v2.api_version.as_deref(), Some("0.2"));
    assert_eq!(v1.api_version.as_deref(), Some("0.1"));

    // Each search stores its keywords as a key, then lists every key.
    for word in ["pear", "apple", "fig"] {
        runtime
            .invoke(
                &v2,
                context(&s, "fixture-v0-2"),
                query(Some(word), None, 100, None),
            )
            .result
            .unwrap();
    }
    let listed = page(
        runtime
            .invoke(
                &v2,
                context(&s, "fixture-v0-2"),
                query(Some("banana"), None, 2, None),
            )
            .result,
    );
    let keys: Vec<String> = listed
        .leads
        .iter()
        .map(|lead| lead.first_name.clone().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["seen/apple", "seen/banana"],
        "in byte order, at most the limit"
    );
    let rest = page(
        runtime
            .invoke(
                &v2,
                context(&s, "fixture-v0-2"),
                query(Some("banana"), None, 10, listed.next_cursor),
            )
            .result,
    );
    let keys: Vec<String> = rest
        .leads
        .iter()
        .map(|lead| lead.first_name.clone().unwrap())
        .collect();
    assert_eq!(keys, ["seen/fig", "seen/pear"]);

    // The 0.1 plugin runs in the same runtime as before.
    let mut markup = CallContext::new("acme");
    markup.settings.insert("markup_percent".into(), "20".into());
    let price = runtime.invoke(
        &v1,
        markup,
        Call::AdjustPrice(PriceRequest {
            plan: None,
            plugin: "csv-leads".into(),
            function: "search".into(),
            units: 3,
            period_units: 0,
            base_price_micros: 1_500,
        }),
    );
    match price.result {
        Ok(Reply::Price(price)) => assert_eq!(price.price_micros, 1_800),
        other => panic!("{other:?}"),
    }
}

/// A store whose database is unreachable.
#[derive(Debug)]
struct Unreachable;

impl KvStore for Unreachable {
    fn get(&self, _key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        anyhow::bail!("connection refused")
    }
    fn set(&self, _key: &str, _value: &[u8]) -> anyhow::Result<Result<(), String>> {
        anyhow::bail!("connection refused")
    }
    fn delete(&self, _key: &str) -> anyhow::Result<()> {
        anyhow::bail!("connection refused")
    }
    fn list(
        &self,
        _prefix: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        anyhow::bail!("connection refused")
    }
}

#[test]
fn a_store_that_fails_fails_the_call_as_the_hosts_fault() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let v2 = load(
        &runtime,
        "fixture-v0-2",
        PluginKind::LeadSource,
        Limits::DEFAULT,
    );
    let mut context = CallContext::new("acme");
    context.kv = Arc::new(Unreachable);
    match runtime
        .invoke(&v2, context, query(Some("pear"), None, 10, None))
        .result
    {
        Err(error @ CallError::Host { .. }) => {
            assert_eq!(
                error.to_string(),
                "plugin fixture-v0-2@0.1.0 could not finish: the host failed (writing the plugin's store: connection refused); try again"
            );
            assert!(!error.is_plugin_failure());
        }
        other => panic!("{other:?}"),
    }
}
