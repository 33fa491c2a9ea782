//! The `tollgate` binary end to end: the operator's commands, the server's
//! health endpoints, and the errors a bad config gets.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tollgate::db::DatabaseUrl;
use tollgate::db::testing::TestDatabase;

/// How long the server may take to start answering before the test fails.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

struct Cli {
    dir: tempfile::TempDir,
    url: String,
    _db: TestDatabase,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for file in ["tollgate.toml", "plans.toml", "pricing.toml"] {
            std::fs::copy(config.join(file), dir.path().join(file)).unwrap();
        }
        let db = TestDatabase::new();
        let url = match &db.url {
            DatabaseUrl::Postgres(url) => url.clone(),
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        };
        Cli { dir, url, _db: db }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("tollgate.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("--config")
            .arg(self.config())
            .args(["--database-url", &self.url])
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("TOLLGATE_CONFIG");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "tollgate {args:?} should have failed"
        );
        String::from_utf8(output.stderr).unwrap()
    }
}

#[test]
fn operator_commands_create_tenants_grant_credits_and_read_them_back() {
    let cli = Cli::new();
    assert!(cli.ok(&["migrate"]).contains("applied 20261124000001"));
    assert!(cli.ok(&["migrate"]).contains("nothing to do"));
    assert!(
        cli.ok(&["tenant", "create", "--name", "Acme"])
            .starts_with("created tenant 1 \"Acme\"")
    );
    cli.ok(&[
        "tenant",
        "create",
        "--name",
        "Globex",
        "--credit-limit",
        "50",
    ]);
    let list = cli.ok(&["tenant", "list"]);
    assert!(
        list.contains("1\tAcme") && list.contains("2\tGlobex"),
        "{list}"
    );

    let grant = [
        "credits",
        "grant",
        "--tenant",
        "1",
        "--amount",
        "1000",
        "--source",
        "allowance",
        "--id",
        "g-1",
    ];
    assert!(
        cli.ok(&grant)
            .contains("granted 1000 credits to tenant 1 as transfer g-1\n")
    );
    assert!(cli.ok(&grant).contains("already applied; nothing moved"));
    let mut changed = grant;
    changed[5] = "999";
    assert!(
        cli.fails(&changed)
            .contains("transfer g-1 already exists with different content")
    );
    cli.ok(&[
        "credits",
        "grant",
        "--tenant",
        "1",
        "--amount",
        "0.5",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ]);

    let balance = cli.ok(&["credits", "balance", "--tenant", "1"]);
    assert!(balance.contains("posted     1000.5"), "{balance}");
    assert!(
        balance.contains("grant g-1 allowance: 1000 of 1000 left"),
        "{balance}"
    );
    assert!(
        balance.contains("expires 2099-01-01T00:00:00Z"),
        "{balance}"
    );
    let history = cli.ok(&["credits", "history", "--tenant", "1", "--limit", "1"]);
    assert!(
        history.contains("grant\t+0.5") && history.contains("more: --before"),
        "{history}"
    );
    assert!(
        cli.ok(&["credits", "audit"])
            .contains("all invariants hold")
    );

    assert!(
        cli.fails(&["credits", "balance", "--tenant", "99"])
            .contains("tenant 99 does not exist")
    );
    assert!(
        cli.fails(&["credits", "grant", "--tenant", "1", "--amount", "-5"])
            .contains("amount must be greater than zero")
    );
    assert!(
        cli.fails(&["credits", "grant", "--tenant", "1", "--amount", "1e99"])
            .contains("--amount")
    );
    assert!(
        cli.fails(&[
            "credits", "grant", "--tenant", "1", "--amount", "1", "--source", "gift"
        ])
        .contains("--source \"gift\"")
    );
    assert!(
        cli.fails(&["tenant", "create", "--name", "  "])
            .contains("tenant name")
    );
}

#[test]
fn a_bad_config_is_refused_with_the_file_key_and_reason() {
    let cli = Cli::new();
    std::fs::write(
        cli.config(),
        "[server]\nlisten = \"127.0.0.1:8080\"\nport = 1\n",
    )
    .unwrap();
    let error = cli.fails(&["migrate"]);
    assert!(
        error.contains("tollgate.toml: server.port: TOML parse error")
            || error.contains("server.port: unknown field `port`"),
        "{error}"
    );
    std::fs::write(cli.config(), "").unwrap();
    std::fs::write(cli.dir.path().join("plans.toml"), "[[plan]]\nid = \"x\"\n").unwrap();
    let error = cli.fails(&["migrate"]);
    assert!(
        error.contains("plans.toml") && error.contains("missing field `name`"),
        "{error}"
    );
    let error = String::from_utf8(
        cli.command(&["migrate"])
            .env("TOLLGATE__STORAGE__POOL_SIZE", "lots")
            .output()
            .unwrap()
            .stderr,
    )
    .unwrap();
    assert!(error.contains("TOLLGATE__STORAGE__POOL_SIZE"), "{error}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET; returns the status line and the body.
fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}

/// The README's run command, on the embedded default: no database URL, so
/// the server creates and migrates SQLite in its data dir on first start.
#[test]
fn serve_creates_the_embedded_database_and_answers_health_checks() {
    let cli = Cli::new();
    let port = free_port();
    let data_dir = cli.dir.path().join("data");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(cli.config())
        .args(["serve", "--demo"])
        .env("TOLLGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLGATE__STORAGE__DATA_DIR", &data_dir)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let health = loop {
        match get(port, "/health") {
            Ok(response) => break response,
            Err(_) if started.elapsed() < STARTUP_DEADLINE => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("server did not answer within {STARTUP_DEADLINE:?}: {error}"),
        }
    };
    assert!(health.0.contains("200"), "{health:?}");
    assert_eq!(health.1, r#"{"status":"ok"}"#);
    let ready = get(port, "/ready").unwrap();
    assert!(ready.0.contains("200"), "{ready:?}");
    assert!(get(port, "/nope").unwrap().0.contains("404"));
    assert!(data_dir.join("tollgate.db").exists());

    // The demo's API key searches the demo leads, metered at the shipped
    // price of 0.1 credit a lead.
    let key = std::fs::read_to_string(data_dir.join("demo-api-key")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&format!("http://127.0.0.1:{port}/api/v1/leads/search"))
        .header("authorization", &format!("Bearer {}", key.trim()))
        .content_type("application/json")
        .send(r#"{"plugin": "csv-leads", "location": "paris", "limit": 10}"#)
        .unwrap();
    let status = response.status().as_u16();
    let answer: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["units"].as_u64(), answer["charged"].as_str()),
        (Some(10), Some("1"))
    );
    assert_eq!(answer["result"]["leads"][0]["location"], "Paris");

    // SIGTERM: the server finishes what it has and exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success());

    // The demo tenant is there with its credits, and it is the only one.
    let url = format!("sqlite://{}", data_dir.join("tollgate.db").display());
    let balance = |tenant: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(cli.config())
            .args([
                "--database-url",
                &url,
                "credits",
                "balance",
                "--tenant",
                tenant,
            ])
            .output()
            .unwrap()
    };
    let plugins = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(cli.config())
        .args(["--database-url", &url, "plugin", "list"])
        .output()
        .unwrap();
    let plugins = String::from_utf8(plugins.stdout).unwrap();
    assert_eq!(
        plugins,
        "bank-transfer\t0.1.0\tpayment-provider\tAPI 0.1\tactive\n\
         card\t0.1.0\tpayment-provider\tAPI 0.1\tactive\n\
         csv-leads\t0.1.0\tlead-source\tAPI 0.1\tactive\n\
         email\t0.1.0\tchannel\tAPI 0.1\tactive\n\
         http-leads\t0.1.0\tlead-source\tAPI 0.1\tactive\n\
         linkedin\t0.1.0\tchannel\tAPI 0.1\tactive\n\
         markup\t0.1.0\tpricing-rule\tAPI 0.1\tactive\n\
         paypal\t0.1.0\tpayment-provider\tAPI 0.1\tactive\n\
         volume-discount\t0.1.0\tpricing-rule\tAPI 0.1\tactive\n\
         webhook\t0.1.0\tchannel\tAPI 0.1\tactive\n"
    );
    let demo = String::from_utf8(balance("1").stdout).unwrap();
    assert!(demo.contains("posted     1249"), "{demo}");
    assert!(!balance("2").status.success());
}

#[test]
fn operators_install_plugins_and_enable_them_for_tenants() {
    let cli = Cli::new();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let markup_dir = plugins.join("markup");
    let markup_dir = markup_dir.to_str().unwrap();
    let markup_wasm = tollgate::runtime::artifacts::path("markup").unwrap();
    let hostile_wasm = tollgate::runtime::artifacts::path("fixture-hostile").unwrap();

    let refused = cli.fails(&["plugin", "install", markup_dir, "--wasm", hostile_wasm]);
    assert!(
        refused
            .contains("the manifest says pricing-rule, but the component is a lead-source plugin"),
        "{refused}"
    );
    let installed = cli.ok(&["plugin", "install", markup_dir, "--wasm", markup_wasm]);
    assert!(
        installed.starts_with("installed markup 0.1.0 (pricing-rule, API 0.1, sha256 "),
        "{installed}"
    );
    assert_eq!(
        cli.ok(&["plugin", "list"]),
        "markup\t0.1.0\tpricing-rule\tAPI 0.1\tactive\n"
    );

    cli.ok(&["tenant", "create", "--name", "Acme"]);
    let refused = cli.fails(&["plugin", "enable", "markup", "--tenant", "1"]);
    assert!(
        refused.contains("plugin markup needs the setting \"markup_percent\""),
        "{refused}"
    );
    let refused = cli.fails(&[
        "plugin",
        "enable",
        "markup",
        "--tenant",
        "1",
        "--setting",
        "oops",
    ]);
    assert!(refused.contains("\"oops\" is not key=value"), "{refused}");
    assert_eq!(
        cli.ok(&[
            "plugin",
            "enable",
            "markup",
            "--tenant",
            "1",
            "--setting",
            "markup_percent=15"
        ]),
        "enabled markup for tenant 1\n"
    );
    assert!(
        cli.fails(&[
            "plugin",
            "enable",
            "markup",
            "--tenant",
            "7",
            "--setting",
            "markup_percent=1"
        ])
        .contains("tenant 7 does not exist")
    );
    assert_eq!(
        cli.ok(&["plugin", "disable", "markup", "--tenant", "1"]),
        "disabled markup for tenant 1\n"
    );
    assert!(
        cli.fails(&["plugin", "disable", "markup", "--tenant", "2"])
            .contains("not enabled for tenant 2")
    );

    let refused = cli.fails(&["plugin", "upgrade", markup_dir, "--wasm", markup_wasm]);
    assert!(
        refused.contains("is not newer than the active version 0.1.0"),
        "{refused}"
    );
    assert_eq!(cli.ok(&["plugin", "remove", "markup"]), "removed markup\n");
    assert_eq!(
        cli.ok(&["plugin", "list"]),
        "markup\t0.1.0\tpricing-rule\tAPI 0.1\t\n"
    );
}

/// The plugin author's path from docs/PLUGINS.md: a new crate outside this
/// repository, built and checked by `tollgate plugin build`, then installed.
#[test]
fn an_author_builds_checks_and_installs_a_new_plugin() {
    let cli = Cli::new();
    let dir = cli.dir.path().join("half-price");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugin-sdk")
        .canonicalize()
        .unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"half-price\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\ntollgate-plugin-sdk = {{ path = {:?}, features = [\"pricing-rule\"] }}\n\n\
             [workspace]\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "use tollgate_plugin_sdk::{PluginError, Price, PriceRequest, PricingRule, register_plugin};\n\
         struct HalfPrice;\n\
         impl PricingRule for HalfPrice {\n\
             fn adjust_price(request: PriceRequest) -> Result<Price, PluginError> {\n\
                 Ok(Price { price_micros: request.base_price_micros / 2, note: None })\n\
             }\n\
         }\n\
         register_plugin!(HalfPrice);\n",
    )
    .unwrap();
    let manifest = "name = \"half-price\"\nversion = \"0.1.0\"\nkind = \"pricing-rule\"\napi_version = \"0.1\"\n";
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace("pricing-rule", "lead-source"),
    )
    .unwrap();
    let dir_text = dir.to_str().unwrap();
    // One shared target dir, so the SDK's dependencies build once per machine.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins-authoring");
    let build = |cli: &Cli| {
        cli.command(&["plugin", "build", dir_text])
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap()
    };
    let refused = build(&cli);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr
            .contains("the manifest says lead-source, but the component is a pricing-rule plugin"),
        "{stderr}"
    );

    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    let built = build(&cli);
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        stdout.contains("a pricing-rule plugin for API 0.1"),
        "{stdout}"
    );
    assert!(dir.join("plugin.wasm").is_file());
    assert!(
        cli.ok(&["plugin", "install", dir_text])
            .starts_with("installed half-price 0.1.0 (pricing-rule")
    );
}

#[test]
fn plugin_call_runs_a_plugin_in_the_sandbox_with_scripted_http() {
    let cli = Cli::new();
    let dir = cli.dir.path().join("http-leads");
    std::fs::create_dir(&dir).unwrap();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    std::fs::copy(
        plugins.join("http-leads/plugin.toml"),
        dir.join("plugin.toml"),
    )
    .unwrap();
    std::fs::copy(
        tollgate::runtime::artifacts::path("http-leads").unwrap(),
        dir.join("plugin.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.join("people.json"),
        r#"{"people": [{"first_name": "Ada", "organization": {"name": "Analytical Engines"}}], "pagination": {"page": 1, "total_pages": 3}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("query.json"),
        r#"{"keywords": "engines", "limit": 10}"#,
    )
    .unwrap();
    let dir = dir.to_str().unwrap();
    let query = format!("{dir}/query.json");
    let respond = format!("200:{dir}/people.json");
    let out = cli.ok(&[
        "plugin",
        "call",
        dir,
        "search",
        "--input",
        &query,
        "--setting",
        "api_key=k-123",
        "--respond",
        &respond,
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["result"]["ok"]["leads"][0]["first_name"], "Ada");
    assert_eq!(report["result"]["ok"]["next_cursor"], "2");
    assert_eq!(report["units"], 1);
    assert!(report["fuel"].as_u64().unwrap() > 0);
    let request = &report["http_requests"][0];
    assert_eq!(
        request["url"],
        "https://api.apollo.io/v1/mixed_people/search"
    );
    assert!(
        request["headers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "x-api-key", "value": "k-123"}))
    );

    // No answer left in the script: the call fails as the plugin reports it.
    let output = cli.run(&[
        "plugin",
        "call",
        dir,
        "search",
        "--input",
        &query,
        "--setting",
        "api_key=k",
    ]);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report["result"]["error"]
            .as_str()
            .unwrap()
            .contains("the script has no answer left"),
        "{report}"
    );

    // Refusals say what is wrong.
    let message = cli.fails(&["plugin", "call", dir, "search", "--input", &query]);
    assert!(
        message.contains("needs the setting \"api_key\""),
        "{message}"
    );
    let message = cli.fails(&["plugin", "call", dir, "send", "--setting", "api_key=k"]);
    assert!(
        message.contains("a lead-source plugin has no function \"send\"; it has search, enrich"),
        "{message}"
    );
    std::fs::write(format!("{dir}/bad.json"), r#"{"limit": "ten"}"#).unwrap();
    let message = cli.fails(&[
        "plugin",
        "call",
        dir,
        "search",
        "--input",
        &format!("{dir}/bad.json"),
        "--setting",
        "api_key=k",
    ]);
    assert!(
        message.contains("input for search: limit: invalid type"),
        "{message}"
    );
}

#[test]
fn api_keys_are_shown_once_listed_by_prefix_and_revoked() {
    let cli = Cli::new();
    cli.ok(&["tenant", "create", "--name", "Acme"]);
    let secret = cli.ok(&[
        "key", "create", "--role", "admin", "--tenant", "1", "--name", "CRM sync",
    ]);
    let secret = secret.trim();
    assert!(secret.starts_with("tg_") && secret.len() == 67, "{secret}");
    let listed = cli.ok(&["key", "list", "--tenant", "1"]);
    assert!(listed.contains(&format!("{}…", &secret[..11])), "{listed}");
    assert!(
        listed.contains("admin") && listed.contains("CRM sync") && listed.contains("active"),
        "{listed}"
    );
    assert!(
        !listed.contains(&secret[11..]),
        "the key itself is never listed: {listed}"
    );
    // The operator's keys are their own list.
    assert_eq!(cli.ok(&["key", "list"]), "");

    let message = cli.fails(&[
        "key", "create", "--role", "owner", "--tenant", "1", "--name", "x",
    ]);
    assert!(
        message.contains("--role \"owner\": use operator, admin or member"),
        "{message}"
    );
    let message = cli.fails(&[
        "key", "create", "--role", "operator", "--tenant", "1", "--name", "x",
    ]);
    assert!(
        message.contains("an operator key belongs to no tenant"),
        "{message}"
    );
    let message = cli.fails(&["key", "revoke", "1"]);
    assert!(message.contains("no API key 1"), "{message}");

    cli.ok(&["key", "revoke", "1", "--tenant", "1"]);
    assert!(
        cli.ok(&["key", "list", "--tenant", "1"])
            .contains("revoked")
    );
}

#[test]
fn billing_commands_sell_record_payments_render_and_refuse_bad_input() {
    let cli = Cli::new();
    cli.ok(&["tenant", "create", "--name", "Acme"]);
    let plans = cli.ok(&["billing", "plans"]);
    assert!(
        plans.contains("starter\tStarter\t49.00 USD/month\t1000 credits\n"),
        "{plans}"
    );
    let sold = cli.ok(&[
        "billing",
        "purchase",
        "--tenant",
        "1",
        "--package",
        "pack-500",
    ]);
    assert!(
        sold.starts_with("purchase 1 of 500 credits; invoice:\n"),
        "{sold}"
    );
    assert!(sold.contains("1\tINV-000001\topen\t5.00 USD\t"), "{sold}");
    let listed = cli.ok(&["billing", "invoices", "--tenant", "1"]);
    assert!(
        listed.starts_with("1\tINV-000001\topen\t5.00 USD\t"),
        "{listed}"
    );
    // The transfer arrived: the credits are granted, once.
    let record = [
        "billing",
        "record-payment",
        "--tenant",
        "1",
        "--invoice",
        "1",
    ];
    assert_eq!(
        cli.ok(&record),
        "invoice 1 paid: 500 credits of package pack-500 granted\n"
    );
    cli.ok(&record);
    let balance = cli.ok(&["credits", "balance", "--tenant", "1"]);
    assert!(
        balance.contains("available  500\n")
            && balance.contains("grant purchase-1 purchase: 500 of 500 left"),
        "{balance}"
    );
    let listed = cli.ok(&["billing", "invoices", "--tenant", "1"]);
    assert!(listed.starts_with("1\tINV-000001\tpaid\t"), "{listed}");
    let out = cli.dir.path().join("INV-000001.pdf");
    let wrote = cli.ok(&[
        "billing",
        "render",
        "1",
        "--tenant",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(wrote.starts_with("wrote INV-000001 to "), "{wrote}");
    assert!(std::fs::read(&out).unwrap().starts_with(b"%PDF-"));

    // Bad input: a clear error, and nothing sold or charged.
    for (args, expected) in [
        (
            vec![
                "billing",
                "purchase",
                "--tenant",
                "1",
                "--package",
                "pack-7",
            ],
            "there is no credit package \"pack-7\"",
        ),
        (
            vec!["billing", "subscribe", "--tenant", "1", "--plan", "gold"],
            "there is no plan \"gold\"",
        ),
        (
            vec!["billing", "refund", "--tenant", "1", "--payment", "9"],
            "no payment 9 of this tenant",
        ),
        (
            vec!["billing", "render", "1", "--tenant", "1", "--out", "x.txt"],
            "--out x.txt: name a .pdf or .html file",
        ),
        (
            vec![
                "billing",
                "record-payment",
                "--tenant",
                "2",
                "--invoice",
                "1",
            ],
            "no document 1",
        ),
    ] {
        let error = cli.fails(&args);
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let listed = cli.ok(&["billing", "invoices", "--tenant", "1"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert_eq!(
        cli.ok(&["billing", "renew"]),
        "0 periods renewed, 0 payments attempted\n"
    );
}

#[test]
fn resellers_are_created_given_tenants_and_keys_and_listed() {
    let cli = Cli::new();
    cli.ok(&["migrate"]);
    cli.ok(&["tenant", "create", "--name", "Acme"]);
    assert!(
        cli.ok(&["tenant", "create", "--name", "North Agency", "--reseller"])
            .starts_with("created reseller 2 \"North Agency\"")
    );
    assert!(
        cli.ok(&["tenant", "create", "--name", "Alpha", "--parent", "2"])
            .starts_with("created tenant 3 \"Alpha\"")
    );
    // Only a reseller has tenants of its own.
    assert!(
        cli.fails(&["tenant", "create", "--name", "Beta", "--parent", "1"])
            .contains("tenant 1 is not a reseller")
    );
    let north = cli.ok(&["tenant", "list", "--reseller", "2"]);
    assert!(
        north.contains("3\tAlpha") && north.contains("parent 2"),
        "{north}"
    );
    assert!(!north.contains("Acme"), "{north}");
    assert!(
        cli.fails(&["tenant", "list", "--reseller", "1"])
            .contains("tenant 1 is not a reseller")
    );
    let all = cli.ok(&["tenant", "list"]);
    assert!(
        all.contains("North Agency") && all.contains(" reseller"),
        "{all}"
    );
    // A reseller's key has the role reseller; a tenant's cannot.
    assert!(
        cli.ok(&[
            "key", "create", "--role", "reseller", "--tenant", "2", "--name", "agency"
        ])
        .contains("tg_")
    );
    cli.fails(&[
        "key", "create", "--role", "reseller", "--tenant", "1", "--name", "x",
    ]);
    cli.fails(&[
        "key", "create", "--role", "admin", "--tenant", "2", "--name", "x",
    ]);
}

#[test]
fn reseller_commands_price_alert_approve_install_suspend_and_report_margins() {
    let cli = Cli::new();
    cli.ok(&["migrate"]);
    cli.ok(&["tenant", "create", "--name", "North Agency", "--reseller"]);
    cli.ok(&["tenant", "create", "--name", "Alpha", "--parent", "1"]);

    // Where each one's system emails go.
    let contact = cli.ok(&[
        "tenant",
        "contact",
        "--tenant",
        "1",
        "--email",
        "ops@north.example",
    ]);
    assert!(
        contact.contains("tenant 1: system emails go to ops@north.example"),
        "{contact}"
    );
    let refused = cli.fails(&["tenant", "contact", "--tenant", "2", "--email", "nobody"]);
    assert!(
        refused.contains("\"nobody\" is not an email address"),
        "{refused}"
    );
    let cleared = cli.ok(&["tenant", "contact", "--tenant", "1", "--clear"]);
    assert!(cleared.contains("no contact address"), "{cleared}");

    // A retail price list from a TOML file, checked like pricing.toml.
    let retail = cli.dir.path().join("retail.toml");
    std::fs::write(
        &retail,
        "markup_percent = 30\n\n[plans]\nprofessional = \"199.00\"\n\n[[price]]\nplugin = \"csv-leads\"\nfunction = \"search\"\nper_call = \"0.4\"\n",
    )
    .unwrap();
    let set = cli.ok(&[
        "reseller",
        "set-pricing",
        "--reseller",
        "1",
        "--file",
        retail.to_str().unwrap(),
    ]);
    assert!(set.contains("30% markup, 1 prices, 1 plan"), "{set}");
    let shown = cli.ok(&["reseller", "pricing", "--reseller", "1"]);
    assert!(
        shown.contains("plan\tstarter\twholesale 49.00 USD\tretail 63.70 USD"),
        "{shown}"
    );
    assert!(
        shown.contains("plan\tprofessional\twholesale 149.00 USD\tretail 199.00 USD"),
        "{shown}"
    );
    std::fs::write(&retail, "[plans]\ngold = \"10.00\"\n").unwrap();
    let refused = cli.fails(&[
        "reseller",
        "set-pricing",
        "--reseller",
        "1",
        "--file",
        retail.to_str().unwrap(),
    ]);
    assert!(
        refused.contains("plans.gold: there is no plan"),
        "{refused}"
    );
    assert!(
        cli.fails(&["reseller", "pricing", "--reseller", "2"])
            .contains("tenant 2 is not a reseller")
    );

    let alerts = cli.ok(&["reseller", "alerts", "--reseller", "1", "--set", "100,1000"]);
    assert!(alerts.contains("thresholds\t1000, 100"), "{alerts}");
    cli.fails(&["reseller", "alerts", "--reseller", "1", "--set", "-5"]);

    // Its own plugin: refused until the operator approves its kind.
    let plugin = cli.dir.path().join("north-leads");
    std::fs::create_dir(&plugin).unwrap();
    let (_, manifest, wasm) = tollgate::runtime::artifacts::FIRST_PARTY
        .iter()
        .find(|(name, ..)| *name == "csv-leads")
        .unwrap();
    std::fs::write(
        plugin.join("plugin.toml"),
        manifest.replace(r#"name = "csv-leads""#, r#"name = "north-leads""#),
    )
    .unwrap();
    std::fs::write(plugin.join("plugin.wasm"), wasm).unwrap();
    let dir = plugin.to_str().unwrap();
    let refused = cli.fails(&["reseller", "install-plugin", "--reseller", "1", dir]);
    assert!(
        refused.contains("approved this reseller's plugins of no kind"),
        "{refused}"
    );
    cli.fails(&[
        "reseller",
        "approve",
        "--reseller",
        "1",
        "--kinds",
        "payment-provider",
    ]);
    assert!(
        cli.ok(&[
            "reseller",
            "approve",
            "--reseller",
            "1",
            "--kinds",
            "lead-source"
        ])
        .contains("may install lead-source plugins reaching no host")
    );
    assert!(
        cli.ok(&["reseller", "install-plugin", "--reseller", "1", dir])
            .contains("installed north-leads 0.1.0 (lead-source) for reseller 1")
    );

    // Suspended and resumed.
    assert!(
        cli.ok(&["tenant", "suspend", "--tenant", "2"])
            .contains("tenant 2 suspended since")
    );
    assert!(
        cli.ok(&["tenant", "resume", "--tenant", "2"])
            .contains("tenant 2 resumed")
    );

    let margins = cli.ok(&["reseller", "margins", "--reseller", "1"]);
    assert!(
        margins.contains("calls\ttotal\tretail 0\twholesale 0\tmargin 0"),
        "{margins}"
    );
}
