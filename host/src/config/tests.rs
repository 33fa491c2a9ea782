use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Parses a settings file and returns the error message, or "ok".
fn check_settings(text: &str, vars: &[(&str, &str)], expect: &str) {
    let got = match parse_settings(Path::new("tollgate.toml"), text, env(vars)) {
        Ok(_) => "ok".to_owned(),
        Err(error) => error.to_string(),
    };
    assert!(got.contains(expect), "expected {expect:?} in {got:?}");
}

fn check_plans(text: &str, expect: &str) {
    let got = match parse_plans(Path::new("plans.toml"), text) {
        Ok(_) => "ok".to_owned(),
        Err(error) => error.to_string(),
    };
    assert!(got.contains(expect), "expected {expect:?} in {got:?}");
}

fn check_pricing(text: &str, expect: &str) {
    let got = match parse_pricing(Path::new("pricing.toml"), text) {
        Ok(_) => "ok".to_owned(),
        Err(error) => error.to_string(),
    };
    assert!(got.contains(expect), "expected {expect:?} in {got:?}");
}

#[test]
fn every_shipped_config_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let config = Config::load(&dir.join("tollgate.toml"), Vec::new()).unwrap();
    let prices: Vec<(&str, i64, Credits)> = config
        .plans
        .iter()
        .map(|plan| (plan.id.as_str(), plan.price.minor, plan.credits))
        .collect();
    let whole = |n| Credits::from_whole(n).unwrap();
    assert_eq!(
        prices,
        [
            ("starter", 4900, whole(1000)),
            ("professional", 14900, whole(5000)),
            ("enterprise", 39900, whole(20000)),
            ("starter-annual", 49000, whole(12000)),
            ("professional-annual", 149000, whole(60000)),
            ("enterprise-annual", 399000, whole(240000)),
        ]
    );
    let packages: Vec<(i64, i64)> = config
        .pricing
        .packages
        .iter()
        .map(|package| (package.credits.micros() / 1_000_000, package.price.minor))
        .collect();
    // $0.01 a credit less 0%, 5%, 10% and 15%.
    assert_eq!(
        packages,
        [(500, 500), (1000, 950), (2500, 2250), (5000, 4250)]
    );
    assert_eq!(config.pricing.credit_price, "0.01".parse().unwrap());

    // Every function of every first-party plugin has a price.
    let functions = [
        ("http-leads", "search"),
        ("http-leads", "enrich"),
        ("csv-leads", "search"),
        ("csv-leads", "enrich"),
        ("email", "send"),
        ("email", "parse-callback"),
        ("webhook", "send"),
        ("webhook", "parse-callback"),
        ("linkedin", "send"),
        ("linkedin", "parse-callback"),
        ("card", "create-payment"),
        ("card", "refund"),
        ("card", "parse-callback"),
        ("paypal", "create-payment"),
        ("paypal", "refund"),
        ("paypal", "parse-callback"),
        ("bank-transfer", "create-payment"),
        ("bank-transfer", "refund"),
        ("bank-transfer", "parse-callback"),
        ("volume-discount", "adjust-price"),
        ("markup", "adjust-price"),
    ];
    let now = crate::units::Timestamp::from_micros(1_767_225_600_000_000);
    for (plugin, function) in functions {
        config
            .pricing
            .book
            .price(TenantId(1), plugin, function, now)
            .unwrap();
    }
    assert_eq!(config.pricing.book.prices.len(), functions.len());
    // 1,200 leads on Starter: 50 free, then of the 1,150 billed the first
    // 1,000 at 2 and 150 at 1.5.
    let search = config
        .pricing
        .book
        .price(TenantId(1), "http-leads", "search", now)
        .unwrap();
    let charged = search.charge(crate::pricing::Usage {
        plan: Some("starter"),
        period_units: 0,
        units: 1_200,
        fuel: 0,
    });
    assert_eq!(charged, Credits::from_whole(2_225).unwrap());
}

#[test]
fn prices_are_validated() {
    let price = |body: &str| {
        format!("{PRICING}[[price]]\nplugin = \"http-leads\"\nfunction = \"search\"\n{body}")
    };
    check_pricing(&price("per_unit = \"0.5\"\n"), "ok");
    check_pricing(
        &price(
            "model = \"graduated\"\ntiers = [{ up_to = 10, per_unit = \"1\" }, { per_unit = \"0.5\", flat = \"2\" }]\n",
        ),
        "ok",
    );
    check_pricing(
        &price(
            "model = \"package\"\npackage_size = 100\npackage_price = \"5\"\npackage_free_units = 100\n",
        ),
        "ok",
    );
    check_pricing(
        &format!("{PRICING}[[price]]\nplugin = \"http-leads\"\nfunction = \"find\"\n"),
        "pricing.toml: price[0].function: \"find\" is not a plugin function; use one of search, enrich, send",
    );
    check_pricing(
        &price("per_unit = \"-1\"\n"),
        "price[0].per_unit: must be 0 to 1000000000 credits, got -1",
    );
    check_pricing(
        &price("model = \"tiered\"\n"),
        "price[0].model: \"tiered\" is not standard, package, graduated or volume",
    );
    check_pricing(
        &price("model = \"package\"\npackage_price = \"5\"\n"),
        "price[0].package_size: is required for a package",
    );
    check_pricing(
        &price("model = \"package\"\npackage_size = 0\npackage_price = \"5\"\n"),
        "price[0]: package_size must be at least 1",
    );
    check_pricing(
        &price("model = \"volume\"\n"),
        "price[0].tiers: are required for volume",
    );
    check_pricing(
        &price("model = \"volume\"\nper_unit = \"1\"\ntiers = [{ per_unit = \"1\" }]\n"),
        "price[0].per_unit: does not apply to model = \"volume\"",
    );
    check_pricing(
        &price("model = \"volume\"\ntiers = [{ up_to = 10, per_unit = \"1\" }]\n"),
        "price[0]: tiers[0]: the last tier must leave out up_to, so every unit has a price",
    );
    check_pricing(
        &price("effective_from = \"tomorrow\"\n"),
        "price[0].effective_from: \"tomorrow\" is not an RFC 3339 time",
    );
    check_pricing(&price("colour = \"red\"\n"), "unknown field `colour`");
    let twice = format!(
        "{}[[price]]\nplugin = \"http-leads\"\nfunction = \"search\"\n",
        price("")
    );
    check_pricing(
        &twice,
        "price[1]: a second price for http-leads search with the same tenant and effective_from",
    );
    // Another tenant's price, or a later one, is not a second price.
    check_pricing(&format!("{twice}tenant = 7\n"), "ok");
    check_pricing(
        &format!("{PRICING}[[rule]]\nrule = \"markup\"\n"),
        "rule[0]: binds a pricing rule to one plan or one tenant: give plan or tenant",
    );
    check_pricing(
        &format!("{PRICING}[[rule]]\nrule = \"markup\"\ntenant = 7\n"),
        "ok",
    );
}

#[test]
fn prices_and_rules_name_plans_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for file in ["tollgate.toml", "plans.toml", "pricing.toml"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    let pricing = dir.path().join("pricing.toml");
    let text = std::fs::read_to_string(&pricing).unwrap();
    std::fs::write(&pricing, text.replace("starter = 50", "gold = 50")).unwrap();
    let error = Config::load(&dir.path().join("tollgate.toml"), Vec::new()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("price[0].free_units: no plan \"gold\" in"),
        "{error}"
    );
    std::fs::write(
        &pricing,
        format!("{text}\n[[rule]]\nrule = \"markup\"\nplan = \"gold\"\n"),
    )
    .unwrap();
    let error = Config::load(&dir.path().join("tollgate.toml"), Vec::new()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("rule[0].plan: no plan \"gold\" in"),
        "{error}"
    );
}

#[test]
fn settings_default_when_the_file_is_empty() {
    let settings = parse_settings(Path::new("t.toml"), "", env(&[])).unwrap();
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.ledger.batch_transfers_max, 1000);
}

#[test]
fn settings_refuse_unknown_keys_and_bad_values() {
    check_settings(
        "[server]\nlisten = \"x\"",
        &[],
        "tollgate.toml: server.listen: invalid socket address",
    );
    check_settings(
        "[server]\nport = 1",
        &[],
        "tollgate.toml: server.port: unknown field `port`, expected `listen`",
    );
    check_settings("[nope]\n", &[], "unknown field `nope`");
    check_settings("[storage\n", &[], "tollgate.toml: TOML parse error");
    check_settings(
        "[storage]\npool_size = -1",
        &[],
        "storage.pool_size: invalid value",
    );
}

#[test]
fn environment_overrides_the_file() {
    let vars = env(&[
        ("TOLLGATE__SERVER__LISTEN", "0.0.0.0:9000"),
        ("TOLLGATE__STORAGE__POOL_SIZE", "3"),
        ("TOLLGATE__STORAGE__DATABASE_URL", "postgres://u@h/db"),
        ("TOLLGATE__NOT__A_KEY", "1"),
        ("OTHER", "x"),
    ]);
    let text = "[server]\nlisten = \"127.0.0.1:1\"\n";
    let settings = parse_settings(Path::new("t.toml"), text, vars).unwrap();
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(settings.storage.pool_size, 3);
    assert_eq!(settings.storage.database_url, "postgres://u@h/db");
}

#[test]
fn billing_settings_are_validated() {
    let settings = parse_settings(
        Path::new("t.toml"),
        "[billing]\nissuer = \"Acme Resale\"\ntax_rate = \"0.2\"\ntax_name = \"VAT\"",
        env(&[]),
    )
    .unwrap();
    assert_eq!(settings.billing.issuer, "Acme Resale");
    assert_eq!(settings.billing.tax_rate, "0.2".parse().unwrap());
    check_settings(
        "[billing]\ntax_rate = \"20\"",
        &[],
        "tollgate.toml: billing.tax_rate: 20 is not a fraction from 0 up to 1 (write 0.2 for 20%)",
    );
    check_settings(
        "[billing]\ntax_rate = \"-0.1\"",
        &[],
        "billing.tax_rate: -0.1 is not",
    );
    check_settings(
        "",
        &[("TOLLGATE__BILLING__TAX_RATE", "1")],
        "TOLLGATE__BILLING__TAX_RATE (overriding tollgate.toml): billing.tax_rate: 1 is not",
    );
    check_settings(
        "[billing]\nissuer = \"  \"",
        &[],
        "billing.issuer: name who issues the invoices",
    );
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    check_settings(
        "",
        &[("TOLLGATE__STORAGE__POOL_SIZE", "many")],
        "TOLLGATE__STORAGE__POOL_SIZE (overriding tollgate.toml): storage.pool_size: invalid type",
    );
}

const PLAN: &str = r#"
[[plan]]
id = "starter"
name = "Starter"
price = "49.00"
currency = "USD"
interval = "month"
credits = 1000
carryover = { credits_max = 1000 }
"#;

#[test]
fn plans_are_validated() {
    check_plans(PLAN, "ok");
    check_plans("", "plans.toml: plan: at least one [[plan]] is required");
    check_plans(
        &PLAN.replace("49.00", "-1"),
        "plans.toml: plan[0].price: must be greater than zero, got -1",
    );
    check_plans(
        &PLAN.replace("\"49.00\"", "0"),
        "plan[0].price: must be greater than zero, got 0",
    );
    check_plans(
        &PLAN.replace("49.00", "49.001"),
        "plan[0].price: 49.001 has more than 2 decimal places",
    );
    check_plans(
        &PLAN.replace("credits = 1000", "credits = 0"),
        "plan[0].credits: must be greater than zero",
    );
    check_plans(
        &PLAN.replace("USD", "XYZ"),
        "plan[0].currency: \"XYZ\" is not a three-letter ISO 4217",
    );
    check_plans(
        &PLAN.replace("month", "fortnight"),
        "plan[0].interval: TOML parse error at line 7, column 12",
    );
    check_plans(
        &PLAN.replace("\"starter\"", "\"Star ter\""),
        "plan[0].id: \"Star ter\" is not an id",
    );
    check_plans(
        &format!("{PLAN}{PLAN}"),
        "plan[1].id: duplicate plan id \"starter\"",
    );
    check_plans(
        &PLAN.replace("name =", "colour = \"red\"\nname ="),
        "plan[0].colour: TOML parse error at line 4",
    );
    check_plans(
        &PLAN.replace("credits_max = 1000", "credits_max = -5"),
        "plan[0].carryover.credits_max: must not be negative",
    );
    check_plans(
        &PLAN.replace(
            "credits_max = 1000",
            "credits_max = 1, expires_after_periods = 0",
        ),
        "plan[0].carryover.expires_after_periods: must be at least 1",
    );
}

const PRICING: &str = r#"
currency = "USD"
credit_price = "0.01"
[[package]]
id = "pack-500"
credits = 500
discount_percent = "5"
"#;

#[test]
fn pricing_is_validated() {
    check_pricing(PRICING, "ok");
    check_pricing(
        &PRICING.replace("\"0.01\"", "\"0\""),
        "pricing.toml: credit_price: must be greater than zero, got 0",
    );
    check_pricing(
        &PRICING.replace("\"0.01\"", "\"-0.01\""),
        "credit_price: must be greater than zero, got -0.01",
    );
    check_pricing(
        &PRICING.replace("\"5\"", "\"100\""),
        "package[0].discount_percent: must be at least 0 and below 100",
    );
    check_pricing(
        &PRICING.replace("\"5\"", "\"-1\""),
        "package[0].discount_percent: must be at least 0",
    );
    check_pricing(
        &PRICING.replace("credits = 500", "credits = -500"),
        "package[0].credits: must be greater than zero",
    );
    check_pricing(
        &format!("{PRICING}[[package]]\nid = \"pack-500\"\ncredits = 1\n"),
        "package[1].id: duplicate package id \"pack-500\"",
    );
    check_pricing(
        &PRICING.replace("credits = 500", "credits = 99999999999999999999"),
        "package[0]",
    );
    check_pricing("currency = \"USD\"\n", "missing field `credit_price`");
}

#[test]
fn package_prices_round_half_away_from_zero() {
    // 333 credits at $0.01 less 10% is $2.997, which rounds to $3.00.
    let text = PRICING.replace("500", "333").replace("\"5\"", "\"10\"");
    let pricing = parse_pricing(Path::new("pricing.toml"), &text).unwrap();
    assert_eq!(pricing.packages[0].price.minor, 300);
}
