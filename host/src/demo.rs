//! Demo data for a first look, created on a fresh database by `tollgate
//! serve --demo`: a tenant with credits, csv-leads enabled over a file of
//! demo leads, and an admin API key written to a file beside the database.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use crate::auth::{self, Role};
use crate::db::{self, Database};
use crate::engagement::schedule::Window;
use crate::engagement::{import, leads, pipeline, scoring, sequences};
use crate::ids::TenantId;
use crate::ledger::{Command, GrantSource, Ledger, TransferId};
use crate::plugins;
use crate::secrets::SecretBox;
use crate::tenants;
use crate::units::{Clock, Credits, Timestamp};

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
    drop(conn);
    engagement(database, tenant.id, now)?;
    let mut conn = database.get()?;
    let (_, key) = auth::create_key(&mut conn, Some(tenant.id), Role::Admin, "demo", now)?;
    write_private(key_file, &key)?;
    tracing::info!(
        tenant = %tenant.id,
        key_file = %key_file.display(),
        "seeded demo tenant \"Demo Sales Co\" with 1,250 credits, csv-leads over 200 demo leads, 60 of them in its lead book with scoring rules, a paused sequence, a pipeline with deals, and an admin API key"
    );
    Ok(true)
}

/// The demo tenant's engagement: 60 of the demo leads imported and scored,
/// a sequence (paused until the tenant enables email with its SMTP server)
/// and a pipeline with a few deals.
fn engagement(database: &Database, tenant: TenantId, now: Timestamp) -> anyhow::Result<()> {
    let csv: String = demo_leads()
        .lines()
        .take(61)
        .map(|line| format!("{line}\n"))
        .collect();
    let request = import::CsvImport {
        csv: csv.into_bytes(),
        mapping: None,
        tags: vec!["demo".into()],
    };
    let mut conn = database.get()?;
    let rules = scoring::Rules {
        rules: vec![
            scoring::Rule {
                field: Some("title".into()),
                contains: Some("VP".into()),
                points: 20,
                ..scoring::Rule::default()
            },
            scoring::Rule {
                field: Some("title".into()),
                equals: Some("Founder".into()),
                points: 15,
                ..scoring::Rule::default()
            },
            scoring::Rule {
                event: Some("opened".into()),
                points: 5,
                half_life_days: Some(30),
                ..scoring::Rule::default()
            },
            scoring::Rule {
                event: Some("replied".into()),
                points: 30,
                ..scoring::Rule::default()
            },
        ],
    };
    db::write_transaction(&mut conn, |conn| {
        scoring::set_rules(conn, tenant, &rules, now)
    })?;
    drop(conn);
    import::import_csv(database, tenant, &request, now)?;
    let mut conn = database.get()?;
    db::write_transaction(&mut conn, |conn| -> anyhow::Result<()> {
        let mailbox = sequences::create_mailbox(
            conn,
            tenant,
            &sequences::NewMailbox {
                plugin: "email".into(),
                address: "sales@demo-sales.example".into(),
                name: Some("Demo Sales".into()),
                daily_cap: Some(50),
                hourly_cap: Some(10),
            },
            now,
        )?;
        let email = |subject: &str, body: &str| sequences::StepSpec::Email {
            mailbox: mailbox.id,
            variants: vec![sequences::Content {
                subject: Some(subject.into()),
                body: body.into(),
                html: None,
                weight: 1,
            }],
        };
        let definition = sequences::Definition {
            name: "Intro to founders".into(),
            time_zone: "Europe/London".into(),
            window: Window::OFFICE_HOURS,
            tracking: true,
            steps: vec![
                email(
                    "A question for {{ lead.company | default(\"your team\") }}",
                    "Hi {{ lead.first_name | default(\"there\") }},\n\nwould a 15-minute call next week help?\n\n{{ sender.name }}",
                ),
                sequences::StepSpec::Wait { business_days: 2 },
                email(
                    "Re: a question",
                    "Hi {{ lead.first_name | default(\"there\") }}, just following up.\n\n{{ sender.name }}",
                ),
                sequences::StepSpec::Task {
                    title: "Call {{ lead.first_name | default(\"the lead\") }}".into(),
                    task: "call".into(),
                    notes: None,
                },
            ],
        };
        let sequence = sequences::create(conn, tenant, &definition, now)?;
        sequences::set_active(conn, tenant, sequence.id, false, now)?;
        let stage =
            |name: &str, outcome: Option<&str>, rules: Vec<pipeline::Action>| pipeline::StageSpec {
                name: name.into(),
                outcome: outcome.map(str::to_owned),
                rules,
            };
        let created = pipeline::create_pipeline(
            conn,
            tenant,
            "Sales",
            &[
                stage("Lead", None, Vec::new()),
                stage("Qualified", None, Vec::new()),
                stage(
                    "Proposal",
                    None,
                    vec![pipeline::Action::CreateTask {
                        title:
                            "Send the proposal to {{ lead.first_name | default(\"the client\") }}"
                                .into(),
                        task: "email".into(),
                    }],
                ),
                stage("Won", Some("won"), Vec::new()),
                stage("Lost", Some("lost"), Vec::new()),
            ],
            now,
        )?;
        let page = leads::list(
            conn,
            tenant,
            &leads::Filter::default(),
            leads::Sort::Oldest,
            None,
            6,
        )?;
        for (index, lead) in page.leads.iter().enumerate() {
            let fields = pipeline::DealFields {
                title: format!("{} pilot", lead.fields.company.as_deref().unwrap_or("New")),
                value: pipeline::money(&format!("{}", 2_000 + 1_500 * index), "USD")?,
                owner: Some("demo".into()),
                lead: Some(lead.id),
            };
            let stage = created.stages[index % 3].id;
            pipeline::create_deal(conn, tenant, created.id, Some(stage), &fields, now)?;
        }
        Ok(())
    })?;
    Ok(())
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
