use std::collections::BTreeMap;

use super::*;
use crate::db::testing::TestDatabase;
use crate::runtime::{RuntimeConfig, artifacts};
use crate::tenants;
use crate::units::Credits;

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

static SECRETS: std::sync::LazyLock<SecretBox> =
    std::sync::LazyLock::new(|| SecretBox::new([42; 32]));

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(artifacts::path(name).unwrap()).unwrap()
}

fn manifest(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(name)
        .join(MANIFEST_FILE);
    std::fs::read_to_string(path).unwrap()
}

struct Setup {
    runtime: Runtime,
    database: crate::db::Database,
    _db: TestDatabase,
}

fn setup() -> Setup {
    let db = TestDatabase::new();
    Setup {
        runtime: Runtime::new(RuntimeConfig::default()).unwrap(),
        database: db.open(),
        _db: db,
    }
}

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn refusal(result: Result<impl std::fmt::Debug, PluginError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn install_checks_the_component_against_its_manifest() {
    let s = setup();
    let check = |manifest: &str, wasm: &[u8], hosts: &[String]| {
        refusal(super::check(&s.runtime, manifest, wasm, hosts))
    };
    let markup = manifest("markup");

    let message = check(&markup, b"not a component", &[]);
    assert!(
        message.starts_with("plugin markup@0.1.0: the file is not a WebAssembly component"),
        "{message}"
    );

    let message = check(&markup, &wasm("fixture-no-world"), &[]);
    assert!(
        message.contains("implements none of the plugin worlds"),
        "{message}"
    );

    let message = check(&markup, &wasm("fixture-hostile"), &[]);
    assert_eq!(
        message,
        "plugin markup@0.1.0: the manifest says pricing-rule, but the component is a lead-source plugin"
    );

    let message = check(
        &markup.replace("api_version = \"0.1\"", "api_version = \"0.9\""),
        &wasm("markup"),
        &[],
    );
    assert_eq!(
        message,
        "plugin markup was built against API 0.9; this host runs 0.1, 0.2"
    );
    // A 0.1 component whose manifest claims 0.2, and the other way round.
    let message = check(
        &markup.replace("api_version = \"0.1\"", "api_version = \"0.2\""),
        &wasm("markup"),
        &[],
    );
    assert_eq!(
        message,
        "plugin markup: the manifest says API 0.2, but the component imports API 0.1; rebuild it or fix api_version"
    );
    let message = check(
        &manifest("fixture-v0-2").replace("api_version = \"0.2\"", "api_version = \"0.1\""),
        &wasm("fixture-v0-2"),
        &[],
    );
    assert_eq!(
        message,
        "plugin fixture-v0-2: the manifest says API 0.1, but the component imports API 0.2; rebuild it or fix api_version"
    );

    let with_host = markup.replace(
        "[[settings]]",
        "[capabilities]\nhttp_hosts = [\"api.example.com\"]\n\n[[settings]]",
    );
    let message = check(&with_host, &wasm("markup"), &[]);
    assert_eq!(
        message,
        "plugin markup declares HTTP host \"api.example.com\", which the operator did not approve (approve it with --allow-host api.example.com)"
    );
    assert!(
        super::check(
            &s.runtime,
            &with_host,
            &wasm("markup"),
            &["api.example.com".into()]
        )
        .is_ok()
    );

    let message = check(
        &markup.replace("kind = \"pricing-rule\"", "kind = \"widget\""),
        &wasm("markup"),
        &[],
    );
    assert!(
        message.contains("kind: \"widget\" is not lead-source"),
        "{message}"
    );
    let message = check(
        &markup.replace("version = \"0.1.0\"", "version = \"one\""),
        &wasm("markup"),
        &[],
    );
    assert!(
        message.contains("version: \"one\" is not a semantic version"),
        "{message}"
    );
    let message = check(
        &format!("{markup}\ncolour = \"red\"\n"),
        &wasm("markup"),
        &[],
    );
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn install_is_idempotent_and_refuses_a_changed_build_under_the_same_version() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let markup = manifest("markup");
    let installed = install(&mut conn, &s.runtime, &markup, &wasm("markup"), &[], NOW).unwrap();
    assert_eq!(
        (installed.name.as_str(), installed.version.as_str()),
        ("markup", "0.1.0")
    );
    assert_eq!(installed.wasm_sha256.len(), 64);
    let again = install(&mut conn, &s.runtime, &markup, &wasm("markup"), &[], NOW).unwrap();
    assert_eq!(again, installed);
    // A different component under the same name and version.
    let noop_as_markup = refusal(install(
        &mut conn,
        &s.runtime,
        &markup,
        &wasm("fixture-noop"),
        &[],
        NOW,
    ));
    assert_eq!(
        noop_as_markup,
        "plugin markup 0.1.0 is already installed with different contents; give the new build a new version"
    );
    let newer = markup.replace("version = \"0.1.0\"", "version = \"0.2.0\"");
    let message = refusal(install(
        &mut conn,
        &s.runtime,
        &newer,
        &wasm("markup"),
        &[],
        NOW,
    ));
    assert!(
        message.contains("install the new version with `tollgate plugin upgrade`"),
        "{message}"
    );
    assert_eq!(list(&mut conn).unwrap(), [installed]);
}

#[test]
fn enabling_checks_the_tenants_settings() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    install(
        &mut conn,
        &s.runtime,
        &manifest("markup"),
        &wasm("markup"),
        &[],
        NOW,
    )
    .unwrap();
    let (tenant, _) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
    let message = refusal(enable(
        &mut conn,
        &SECRETS,
        tenant.id,
        "markup",
        &settings(&[]),
        NOW,
    ));
    assert_eq!(
        message,
        "plugin markup needs the setting \"markup_percent\": Whole percent added to the configured price, 0 to 1000."
    );
    let message = refusal(enable(
        &mut conn,
        &SECRETS,
        tenant.id,
        "markup",
        &settings(&[("markup_percent", "5"), ("colour", "red")]),
        NOW,
    ));
    assert_eq!(
        message,
        "plugin markup has no setting \"colour\"; it takes markup_percent"
    );
    let message = refusal(enable(
        &mut conn,
        &SECRETS,
        tenant.id,
        "nope",
        &settings(&[]),
        NOW,
    ));
    assert_eq!(message, "plugin nope is not installed");
    assert_eq!(
        tenant_settings(&mut conn, &SECRETS, tenant.id, "markup").unwrap(),
        None
    );

    enable(
        &mut conn,
        &SECRETS,
        tenant.id,
        "markup",
        &settings(&[("markup_percent", "5")]),
        NOW,
    )
    .unwrap();
    assert_eq!(
        tenant_settings(&mut conn, &SECRETS, tenant.id, "markup").unwrap(),
        Some(settings(&[("markup_percent", "5")]))
    );
    enable(
        &mut conn,
        &SECRETS,
        tenant.id,
        "markup",
        &settings(&[("markup_percent", "7")]),
        NOW,
    )
    .unwrap();
    assert_eq!(
        tenant_settings(&mut conn, &SECRETS, tenant.id, "markup").unwrap(),
        Some(settings(&[("markup_percent", "7")]))
    );
    assert!(disable(&mut conn, tenant.id, "markup", NOW).unwrap());
    assert_eq!(
        tenant_settings(&mut conn, &SECRETS, tenant.id, "markup").unwrap(),
        None
    );
}

#[test]
fn an_upgrade_serves_new_calls_while_running_calls_finish_on_the_old_version() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let v1 = manifest("fixture-hostile");
    let v2 = v1.replace("version = \"0.1.0\"", "version = \"0.2.0\"");
    let hostile = wasm("fixture-hostile");
    install(&mut conn, &s.runtime, &v1, &hostile, &[], NOW).unwrap();
    let registry = Registry::new(Arc::new(Runtime::new(RuntimeConfig::default()).unwrap()));
    let old = registry.get(&mut conn, "fixture-hostile").unwrap();
    assert_eq!(old.version, "0.1.0");
    let search = |keywords: &str| {
        crate::runtime::Call::Search(crate::runtime::SearchQuery {
            keywords: Some(keywords.into()),
            title: None,
            company: None,
            domain: None,
            location: None,
            limit: 1,
            cursor: None,
        })
    };
    let running = {
        let (registry, old) = (&registry, old.clone());
        std::thread::scope(|scope| {
            let call = scope.spawn(move || {
                registry.runtime().invoke(
                    &old,
                    crate::runtime::CallContext::new("t"),
                    search("loop"),
                )
            });
            let upgraded = upgrade(&mut conn, &s.runtime, &v2, &hostile, &[], NOW).unwrap();
            assert_eq!(upgraded.version, "0.2.0");
            call.join().unwrap()
        })
    };
    let error = running.result.unwrap_err().to_string();
    assert!(
        error.starts_with("plugin fixture-hostile@0.1.0 used all"),
        "{error}"
    );
    let new = registry.get(&mut conn, "fixture-hostile").unwrap();
    assert_eq!(new.version, "0.2.0");
    // The old version still answers whoever holds it.
    assert!(
        registry
            .runtime()
            .invoke(&old, crate::runtime::CallContext::new("t"), search("ok"))
            .result
            .is_ok()
    );
    let versions: Vec<(String, bool)> = list(&mut conn)
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.active))
        .collect();
    assert_eq!(versions, [("0.1.0".into(), false), ("0.2.0".into(), true)]);

    let message = refusal(upgrade(&mut conn, &s.runtime, &v1, &hostile, &[], NOW));
    assert_eq!(
        message,
        "plugin fixture-hostile 0.1.0 is not newer than the active version 0.2.0"
    );
    let message = refusal(upgrade(
        &mut conn,
        &s.runtime,
        &manifest("markup"),
        &wasm("markup"),
        &[],
        NOW,
    ));
    assert_eq!(message, "plugin markup is not installed");
}

#[test]
fn a_removed_plugin_serves_no_one_and_can_be_installed_again() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    install(
        &mut conn,
        &s.runtime,
        &manifest("markup"),
        &wasm("markup"),
        &[],
        NOW,
    )
    .unwrap();
    let (tenant, _) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
    let settings: BTreeMap<String, String> =
        [("markup_percent".to_string(), "5".to_string())].into();
    enable(&mut conn, &SECRETS, tenant.id, "markup", &settings, NOW).unwrap();
    let registry = Registry::new(Arc::new(Runtime::new(RuntimeConfig::default()).unwrap()));
    registry.get(&mut conn, "markup").unwrap();

    remove(&mut conn, "markup").unwrap();
    assert_eq!(
        refusal(registry.get(&mut conn, "markup")),
        "plugin markup is not installed"
    );
    assert_eq!(
        tenant_settings(&mut conn, &SECRETS, tenant.id, "markup").unwrap(),
        None
    );
    assert_eq!(
        refusal(remove(&mut conn, "markup")),
        "plugin markup is not installed"
    );
    assert!(!list(&mut conn).unwrap()[0].active);

    install(
        &mut conn,
        &s.runtime,
        &manifest("markup"),
        &wasm("markup"),
        &[],
        NOW,
    )
    .unwrap();
    assert_eq!(registry.get(&mut conn, "markup").unwrap().version, "0.1.0");
    let message = refusal(install(
        &mut conn,
        &s.runtime,
        &manifest("markup"),
        &wasm("fixture-noop"),
        &[],
        NOW,
    ));
    assert!(message.contains("already installed"), "{message}");
}

#[test]
fn first_party_plugins_install_once_and_stay_removed_when_removed() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let first = install_first_party(&mut conn, &s.runtime, NOW).unwrap();
    let names: Vec<&str> = first.iter().map(|plugin| plugin.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bank-transfer",
            "card",
            "csv-leads",
            "email",
            "http-leads",
            "linkedin",
            "markup",
            "paypal",
            "volume-discount",
            "webhook",
        ]
    );
    assert!(
        install_first_party(&mut conn, &s.runtime, NOW)
            .unwrap()
            .is_empty()
    );
    remove(&mut conn, "markup").unwrap();
    assert!(
        install_first_party(&mut conn, &s.runtime, NOW)
            .unwrap()
            .is_empty()
    );
    let active: Vec<String> = list(&mut conn)
        .unwrap()
        .into_iter()
        .filter(|version| version.active)
        .map(|version| version.name)
        .collect();
    assert_eq!(
        active,
        [
            "bank-transfer",
            "card",
            "csv-leads",
            "email",
            "http-leads",
            "linkedin",
            "paypal",
            "volume-discount",
            "webhook",
        ]
    );
}

#[test]
fn secret_settings_are_sealed_at_rest_and_opened_for_the_plugin() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    install_first_party(&mut conn, &s.runtime, NOW).unwrap();
    let (acme, _) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
    let (globex, _) = tenants::create(&mut conn, "Globex", None, Credits::ZERO, NOW).unwrap();
    let card = settings(&[
        ("secret_key", "sk_live_acme"),
        ("webhook_secret", "whsec_acme"),
        ("api_base_url", "https://api.stripe.com"),
    ]);
    enable(&mut conn, &SECRETS, acme.id, "card", &card, NOW).unwrap();
    let stored: String = plugin_enablements::table
        .filter(plugin_enablements::tenant_id.eq(acme.id.0))
        .select(plugin_enablements::settings)
        .first(&mut conn)
        .unwrap();
    assert!(!stored.contains("sk_live_acme"), "{stored}");
    assert!(!stored.contains("whsec_acme"), "{stored}");
    // What is not secret stays readable.
    assert!(stored.contains("https://api.stripe.com"), "{stored}");
    assert_eq!(
        tenant_settings(&mut conn, &SECRETS, acme.id, "card").unwrap(),
        Some(card.clone())
    );

    // Another key cannot open them, and says what to do.
    let message = refusal(tenant_settings(
        &mut conn,
        &SecretBox::new([1; 32]),
        acme.id,
        "card",
    ));
    assert!(message.contains("cannot be decrypted"), "{message}");
    assert!(
        message.contains("restore the key file, or set the secret again"),
        "{message}"
    );
    // Nor does a sealed value copied to another tenant's row.
    diesel::insert_into(plugin_enablements::table)
        .values((
            plugin_enablements::tenant_id.eq(globex.id.0),
            plugin_enablements::plugin.eq("card"),
            plugin_enablements::settings.eq(&stored),
            plugin_enablements::enabled.eq(true),
            plugin_enablements::updated_at.eq(NOW.micros()),
        ))
        .execute(&mut conn)
        .unwrap();
    assert!(tenant_settings(&mut conn, &SECRETS, globex.id, "card").is_err());
}
