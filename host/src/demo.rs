//! Demo data for a first look, created on a fresh database by `tollgate
//! serve --demo`: a tenant with credits, csv-leads enabled over a file of
//! demo leads, and an admin API key written to a file beside the database.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use crate::auth::{self, Role};
use crate::db::Database;
use crate::ledger::{Command, GrantSource, Ledger, TransferId};
use crate::plugins;
use crate::secrets::SecretBox;
use crate::tenants;
use crate::units::{Clock, Credits};

const DAY_US: i64 = 86_400 * 1_000_000;

/// Seeds the demo tenant unless the database already has tenants. Returns
/// whether it did.
pub fn seed(
    database: &Database,
    ledger: &Ledger,
    clock: &dyn Clock,
    secrets: &SecretBox,
    key_file: &Path,
) -> anyhow::Result<bool> {
    let mut conn = database.get()?;
    if !tenants::list(&mut conn, None, 1)?.is_empty() {
        return Ok(false);
    }
    let now = clock.now();
    let (tenant, wallet) = tenants::create(&mut conn, "Demo Sales Co", None, Credits::ZERO, now)?;
    drop(conn);
    let grants = [
        ("demo-allowance", GrantSource::Allowance, 1_000, 30),
        ("demo-promotion", GrantSource::Promotion, 250, 60),
    ];
    for (id, source, credits, days) in grants {
        ledger.submit_blocking(Command::Grant {
            id: TransferId::new(id)?,
            account: wallet,
            source,
            amount: Credits::from_whole(credits).expect("fits"),
            expires_at: Some(now.saturating_add_micros(days * DAY_US)),
            priority: None,
            memo: "demo data".into(),
        })?;
    }
    let mut conn = database.get()?;
    plugins::enable(
        &mut conn,
        secrets,
        tenant.id,
        "csv-leads",
        &BTreeMap::new(),
        now,
    )?;
    plugins::kv::put_file(
        &mut conn,
        tenant.id,
        "csv-leads",
        "demo-leads.csv",
        demo_leads().as_bytes(),
        now,
    )?;
    let (_, key) = auth::create_key(&mut conn, Some(tenant.id), Role::Admin, "demo", now)?;
    write_private(key_file, &key)?;
    tracing::info!(
        tenant = %tenant.id,
        key_file = %key_file.display(),
        "seeded demo tenant \"Demo Sales Co\" with 1,250 credits, csv-leads over 200 demo leads, and an admin API key"
    );
    Ok(true)
}

/// 200 made-up leads across a few titles, companies and cities.
fn demo_leads() -> String {
    const FIRST: [&str; 10] = [
        "Ada",
        "Grace",
        "Alan",
        "Katherine",
        "Edsger",
        "Barbara",
        "Donald",
        "Frances",
        "Ken",
        "Radia",
    ];
    const LAST: [&str; 10] = [
        "Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Knuth", "Allen",
        "Thompson", "Perlman",
    ];
    const TITLES: [&str; 4] = ["Head of Sales", "CTO", "VP Marketing", "Founder"];
    const COMPANIES: [(&str, &str); 5] = [
        ("Analytical Engines", "analytical.example"),
        ("Compiler Works", "compiler.example"),
        ("Orbit Labs", "orbit.example"),
        ("Paper Tape Co", "papertape.example"),
        ("Spanning Trees", "spanning.example"),
    ];
    const CITIES: [&str; 4] = ["London", "Paris", "Berlin", "New York"];
    let mut csv = String::from("First Name,Last Name,Email,Title,Company,Website,City\n");
    for n in 0..200 {
        let (first, last) = (FIRST[n % 10], LAST[(n / 10) % 10]);
        let (company, domain) = COMPANIES[n % 5];
        csv.push_str(&format!(
            "{first},{last},{}.{}{n}@{domain},{},{company},https://{domain},{}\n",
            first.to_lowercase(),
            last.to_lowercase(),
            TITLES[n % 4],
            CITIES[n % 4],
        ));
    }
    csv
}

/// Writes `text` to a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{text}")?;
    Ok(())
}
