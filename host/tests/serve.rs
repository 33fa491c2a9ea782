//! `tollgate serve` as a real process: killed under load and restarted, and
//! two of them sharing one database. On SQLite, or on PostgreSQL when
//! TEST_DATABASE_URL is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollgate::db::DatabaseUrl;
use tollgate::db::testing::TestDatabase;

/// How long a server may take to start, or a condition to come true.
const DEADLINE: Duration = Duration::from_secs(60);

struct Setup {
    dir: tempfile::TempDir,
    url: String,
    _db: TestDatabase,
}

impl Setup {
    fn new() -> Setup {
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
        Setup { dir, url, _db: db }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `tollgate serve` on a free port; returns it once ready.
    fn serve(&self, demo: bool) -> Server {
        self.serve_with(demo, &[])
    }

    /// [`Setup::serve`] where a wallet is busy enough for a lease from its
    /// first call.
    fn serve_leasing(&self, demo: bool) -> Server {
        self.serve_with(demo, &[("TOLLGATE__LEDGER__LEASE_AFTER_CALLS", "1")])
    }

    fn serve_with(&self, demo: bool, env: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("--config")
            .arg(self.dir.path().join("tollgate.toml"))
            .args(["--database-url", &self.url, "serve"])
            .env("TOLLGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("TOLLGATE__STORAGE__DATA_DIR", self.data_dir())
            // Holds of calls a kill interrupts time out quickly.
            .env("TOLLGATE__LEDGER__HOLD_TIMEOUT_SECONDS_DEFAULT", "2")
            .env("TOLLGATE__LEDGER__EXPIRY_SWEEP_SECONDS", "1")
            .env("TOLLGATE__LIMITS__TENANT_REQUESTS_PER_SECOND", "100000")
            .env("TOLLGATE__LIMITS__TENANT_BURST", "100000")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if demo {
            command.arg("--demo");
        }
        let child = command.spawn().unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
        };
        eventually("the server to be ready", || {
            server
                .http
                .get(&format!("{}/readyz", server.base))
                .call()
                .is_ok_and(|response| response.status() == 200)
        });
        server
    }

    fn key(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("demo-api-key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn audit(&self) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(self.dir.path().join("tollgate.toml"))
            .args(["--database-url", &self.url, "credits", "audit"])
            .env("TOLLGATE__STORAGE__DATA_DIR", self.data_dir())
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    }
}

/// Polls `condition` until it holds, or fails the test at the deadline.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < DEADLINE,
            "waited {DEADLINE:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Server {
    child: Child,
    base: String,
    http: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A search; `None` when the server did not answer (it was killed).
    fn search(&self, key: &str, limit: u32) -> Option<(u16, serde_json::Value)> {
        let mut response = self
            .http
            .post(&format!("{}/api/v1/leads/search", self.base))
            .header("authorization", &format!("Bearer {key}"))
            .content_type("application/json")
            .send(format!(r#"{{"plugin": "csv-leads", "limit": {limit}}}"#))
            .ok()?;
        let status = response.status().as_u16();
        let body = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
        Some((status, body))
    }

    fn get(&self, key: &str, path: &str) -> serde_json::Value {
        let mut response = self
            .http
            .get(&format!("{}/api/v1{path}", self.base))
            .header("authorization", &format!("Bearer {key}"))
            .call()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Every usage record of the key's tenant, by call id.
    fn records(&self, key: &str) -> BTreeMap<String, serde_json::Value> {
        let mut records = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/usage/records?limit=500&before={cursor}"),
                None => "/usage/records?limit=500".to_owned(),
            };
            let page = self.get(key, &path);
            for record in page["records"].as_array().unwrap() {
                records.insert(
                    record["call_id"].as_str().unwrap().to_owned(),
                    record.clone(),
                );
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return records,
            }
        }
    }
}

fn credits(value: &serde_json::Value) -> f64 {
    value.as_str().unwrap().parse().unwrap()
}

#[test]
fn sigkill_under_load_loses_no_answered_call() {
    let setup = Setup::new();
    // The calls go on a wallet lease, which the kill leaves behind.
    let mut server = setup.serve_leasing(true);
    let pid = server.child.id();
    let key = setup.key();
    // Eight clients search (one lead, 0.1 credit each) until the server
    // dies; every answered call is remembered.
    let answered: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let n_answered = AtomicUsize::new(0);
    let dead = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while !dead.load(Ordering::SeqCst) {
                    match server.search(&key, 1) {
                        Some((200, body)) => {
                            let call = (
                                body["call_id"].as_str().unwrap().to_owned(),
                                body["charged"].as_str().unwrap().to_owned(),
                            );
                            answered.lock().unwrap().push(call);
                            n_answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Some((status, body)) => panic!("{status}: {body}"),
                        None => return,
                    }
                }
            });
        }
        eventually("300 answered calls", || {
            n_answered.load(Ordering::SeqCst) >= 300
        });
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        dead.store(true, Ordering::SeqCst);
    });
    server.child.wait().unwrap();
    drop(server);

    // Restarted, the server settles what the kill interrupted; holds of
    // calls that never reached a record time out.
    let server = setup.serve(false);
    eventually("no hold left pending", || {
        server.get(&key, "/billing/credits")["balance"]["pending"] == "0"
    });
    // Calls the kill interrupted are ended once their holds are gone.
    eventually("no call left invoking", || {
        server
            .records(&key)
            .values()
            .all(|record| record["state"] != "invoking")
    });
    let records = server.records(&key);
    let answered = answered.into_inner().unwrap();
    assert!(answered.len() >= 300);
    for (call_id, charged) in &answered {
        let record = records
            .get(call_id)
            .unwrap_or_else(|| panic!("answered call {call_id} has no usage record"));
        assert_eq!(record["state"], "settled", "{record}");
        assert_eq!(&record["charged"], charged, "{record}");
    }
    // Records sum to what left the wallet.
    let charged: f64 = records
        .values()
        .map(|record| credits(&record["charged"]))
        .sum();
    let posted = credits(&server.get(&key, "/billing/credits")["balance"]["posted"]);
    assert!(
        (1_250.0 - posted - charged).abs() < 1e-6,
        "{posted} + {charged}"
    );
    // Calls the kill interrupted were ended at restart, charged nothing.
    assert!(records.values().all(|record| record["state"] != "invoking"));
    drop(server);
    assert!(setup.audit().contains("all invariants hold"));
}

/// 24 clients, alternating between `servers`, search `limit` leads (each
/// search charged `charged`) until refused for want of credits; returns how
/// many searches succeeded.
fn spend_until_refused(servers: [&Server; 2], key: &str, limit: u32, charged: &str) -> usize {
    let succeeded = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for client in 0..24 {
            let (server, succeeded) = (servers[client % 2], &succeeded);
            scope.spawn(move || {
                loop {
                    match server.search(key, limit) {
                        Some((200, body)) => {
                            assert_eq!(body["charged"], charged, "{body}");
                            succeeded.fetch_add(1, Ordering::SeqCst);
                        }
                        Some((402, _)) => return,
                        other => panic!("{other:?}"),
                    }
                }
            });
        }
    });
    succeeded.into_inner()
}

#[test]
fn two_servers_sharing_a_database_never_overspend() {
    let setup = Setup::new();
    let first = setup.serve(true);
    let second = setup.serve(false);
    let key = setup.key();
    // 1,250 credits pay for exactly 125 searches of 100 leads at 0.1.
    assert_eq!(spend_until_refused([&first, &second], &key, 100, "10"), 125);
    let balance = first.get(&key, "/billing/credits");
    assert_eq!(
        (
            &balance["balance"]["posted"],
            &balance["balance"]["pending"]
        ),
        (&"0".into(), &"0".into())
    );
    assert_eq!(first.records(&key).len(), 125);
    drop((first, second));
    assert!(setup.audit().contains("all invariants hold"));
}

#[test]
fn two_servers_leasing_one_wallet_spend_it_to_exactly_zero() {
    let setup = Setup::new();
    let first = setup.serve_leasing(true);
    let second = setup.serve_leasing(false);
    let key = setup.key();
    // 105 searches of 100 leads at 0.1 leave 200 of the demo's 1,250
    // credits: 2,000 searches of one lead, the first half or so on leases
    // (while the wallet covers 1,024 of them), the rest each on its own
    // hold.
    for _ in 0..105 {
        let (status, body) = first.search(&key, 100).unwrap();
        assert_eq!((status, &body["charged"]), (200, &"10".into()), "{body}");
    }
    assert_eq!(
        spend_until_refused([&first, &second], &key, 1, "0.1"),
        2_000
    );
    let balance = first.get(&key, "/billing/credits");
    assert_eq!(
        (
            &balance["balance"]["posted"],
            &balance["balance"]["pending"]
        ),
        (&"0".into(), &"0".into())
    );
    let records = first.records(&key);
    assert_eq!(records.len(), 105 + 2_000);
    assert!(records.values().all(|record| record["state"] == "settled"));
    // Calls went on leases (a lease's id does not say whose).
    let url = DatabaseUrl::parse(&setup.url, &setup.data_dir()).unwrap();
    let database = tollgate::db::Database::open(&url, 2).unwrap();
    let mut conn = database.get().unwrap();
    let leases: i64 = {
        use diesel::prelude::*;
        use tollgate::db::schema::transfers;
        transfers::table
            .filter(transfers::kind.eq("hold"))
            .filter(transfers::id.like("lease:%"))
            .count()
            .get_result(&mut conn)
            .unwrap()
    };
    assert!(leases > 0, "no call went on a lease");
    drop((first, second));
    assert!(setup.audit().contains("all invariants hold"));
}

#[test]
fn sigterm_under_load_finishes_and_settles_every_call_in_flight() {
    let setup = Setup::new();
    // The calls go on a wallet lease, which a clean exit gives back.
    let mut server = setup.serve_leasing(true);
    let pid = server.child.id();
    let key = setup.key();
    let n_answered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                // Until the server stops answering.
                while let Some((status, body)) = server.search(&key, 1) {
                    assert_eq!(status, 200, "{body}");
                    n_answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        eventually("100 answered calls", || {
            n_answered.load(Ordering::SeqCst) >= 100
        });
        let stopped = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
    });
    assert!(server.child.wait().unwrap().success(), "a clean exit");
    // Right after the exit, before any restart or timeout: every call that
    // started was finished and settled, and no credit is left on hold.
    let url = DatabaseUrl::parse(&setup.url, &setup.data_dir()).unwrap();
    let database = tollgate::db::Database::open(&url, 2).unwrap();
    let mut conn = database.get().unwrap();
    let tenant = tollgate::tenants::list(&mut conn, None, 1).unwrap()[0].id;
    let wallet = tollgate::ledger::queries::wallet_of(&mut conn, tenant).unwrap();
    let balance = tollgate::ledger::queries::balance(&mut conn, wallet).unwrap();
    assert_eq!(balance.pending, tollgate::units::Credits::ZERO);
    let records = tollgate::metering::records(&mut conn, tenant, 100_000).unwrap();
    assert!(records.len() >= n_answered.load(Ordering::SeqCst));
    assert!(
        records.iter().all(|record| record.state == "settled"),
        "every call in flight was settled"
    );
    drop(server);
    assert!(setup.audit().contains("all invariants hold"));
}

#[test]
fn the_demo_has_a_scored_lead_book_a_paused_sequence_and_a_pipeline() {
    let setup = Setup::new();
    let server = setup.serve(true);
    let key = setup.key();
    let leads = server.get(&key, "/leads?limit=500");
    let leads = leads["leads"].as_array().unwrap();
    assert_eq!(leads.len(), 60);
    // Highest score first: a VP (20 points) before a founder (15).
    assert_eq!(leads[0]["title"], "VP Marketing");
    assert_eq!(leads[0]["score"], 20);
    let sequences = server.get(&key, "/sequences");
    assert_eq!(sequences["sequences"][0]["status"], "paused");
    let pipelines = server.get(&key, "/pipelines");
    let pipeline = pipelines["pipelines"][0]["id"].as_i64().unwrap();
    let board = server.get(&key, &format!("/pipelines/{pipeline}"));
    let deals: usize = board["pipeline"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["deals"].as_array().unwrap().len())
        .sum();
    assert_eq!(deals, 6);
    // The deals that entered Proposal made its task.
    let tasks = server.get(&key, "/tasks");
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);

    // The dashboard: the demo key signs in, and the pages show the demo.
    let browser: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let signed_in = browser
        .post(&format!("{}/sign-in", server.base))
        .send_form([("key", key.as_str())])
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    for (path, shows) in [
        ("/app/credits", "1,250"),
        ("/app/leads", "VP Marketing"),
        (&*format!("/app/pipelines/{pipeline}"), "data-deal="),
    ] {
        let mut page = browser
            .get(&format!("{}{path}", server.base))
            .header("cookie", &session)
            .call()
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let html = page.body_mut().read_to_string().unwrap();
        assert!(html.contains(shows), "{path} does not show {shows:?}");
    }
}
