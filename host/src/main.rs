//! The `tollgate` command: load the config, then serve, migrate, or run an
//! operator's command against the database.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use tollgate::config::Config;
use tollgate::db::{Database, DatabaseUrl, DbConnection};
use tollgate::ids::TenantId;
use tollgate::ledger::{self, Command, GrantSource, Ledger, TransferId, WriterOptions, queries};
use tollgate::runtime::{Runtime, RuntimeConfig};
use tollgate::secrets::SecretBox;
use tollgate::units::{Clock, Credits, SystemClock, Timestamp};
use tollgate::{api, plugins, scheduler, tenants};

/// Many threads allocate and free small objects at a high rate (a call's
/// request, its store, its usage record): mimalloc's per-thread heaps do
/// that at a fraction of glibc's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often this host looks for sequence steps that are due: a send is
/// at most this late.
const SEQUENCE_TICK: Duration = Duration::from_secs(5);
/// How often the outbox's due system emails are sent.
const MAIL_TICK: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "Metered plugin platform for sales engagement"
)]
struct Cli {
    /// The main config file; plans.toml and pricing.toml are read beside it.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_CONFIG",
        default_value = "config/tollgate.toml"
    )]
    config: PathBuf,
    /// Overrides storage.database_url: postgres://... or sqlite://<path>.
    #[arg(long, global = true, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the server: migrate, then serve HTTP until interrupted.
    Serve {
        /// Overrides server.listen.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Seed a demo tenant with credits when the database has no tenants.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations.
    Migrate {
        /// Revert every migration instead (destroys all data).
        #[arg(long)]
        revert_all: bool,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// A white-label reseller's retail prices, balance alerts and margins.
    #[command(subcommand)]
    Reseller(ResellerCommand),
    /// Grant credits and read balances and history.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Install plugins and enable them for tenants.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The operator's side of billing: plans, subscriptions, packages,
    /// invoices, payments received and refunds.
    #[command(subcommand)]
    Billing(BillingCommand),
}

#[derive(Subcommand, Debug)]
enum BillingCommand {
    /// List the plans; a custom plan shows the one tenant it is for.
    Plans,
    /// Subscribe a tenant to a plan; the first period's invoice is issued
    /// and its credits granted once it is paid.
    Subscribe {
        #[arg(long)]
        tenant: i64,
        #[arg(long)]
        plan: String,
    },
    /// Sell a credit package to a tenant; its invoice is issued and its
    /// credits granted once it is paid.
    Purchase {
        #[arg(long)]
        tenant: i64,
        #[arg(long)]
        package: String,
    },
    /// List a tenant's invoices (or credit notes), oldest first.
    Invoices {
        #[arg(long)]
        tenant: i64,
        #[arg(long)]
        credit_notes: bool,
    },
    /// Write an invoice or credit note to a file: PDF or HTML, as its name
    /// ends.
    Render {
        /// The document's id.
        id: i64,
        #[arg(long)]
        tenant: i64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Record that an invoice was paid outside a provider (a bank transfer
    /// arrived): what it bought is granted, once.
    RecordPayment {
        #[arg(long)]
        tenant: i64,
        #[arg(long)]
        invoice: i64,
    },
    /// List a tenant's payments, newest first.
    Payments {
        #[arg(long)]
        tenant: i64,
    },
    /// Refund a succeeded payment in full: the money back through its
    /// provider, the unspent credits it bought taken back, a credit note.
    Refund {
        #[arg(long)]
        tenant: i64,
        #[arg(long)]
        payment: i64,
    },
    /// Renew the subscriptions whose period ended and collect what is due,
    /// once (a running server does this every sweep).
    Renew,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a key and print it: it is shown this once.
    Create {
        /// operator (the platform), admin or member (of --tenant).
        #[arg(long)]
        role: String,
        /// The tenant an admin or member key belongs to.
        #[arg(long)]
        tenant: Option<i64>,
        /// What the key is for, such as "CRM sync".
        #[arg(long)]
        name: String,
    },
    /// List a tenant's keys (the operator's without --tenant).
    List {
        #[arg(long)]
        tenant: Option<i64>,
    },
    /// Revoke a key at once.
    Revoke {
        id: i64,
        /// The tenant it belongs to (none for an operator key).
        #[arg(long)]
        tenant: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Build the plugin crate in DIR for wasm32-wasip2, write DIR/plugin.wasm,
    /// and check it against DIR/plugin.toml as install will.
    Build { dir: PathBuf },
    /// Check a plugin and install it: DIR holds plugin.toml (and plugin.wasm
    /// unless --wasm names the component).
    Install {
        dir: PathBuf,
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Approve an HTTP host the manifest declares; repeat for each.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
    },
    /// Install a newer version of an installed plugin; calls already running
    /// finish on the old one.
    Upgrade {
        dir: PathBuf,
        #[arg(long)]
        wasm: Option<PathBuf>,
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
    },
    /// Remove a plugin: no tenant can use it any more.
    Remove { name: String },
    /// List installed plugin versions.
    List,
    /// Enable a plugin for a tenant, with its settings.
    Enable {
        name: String,
        #[arg(long)]
        tenant: i64,
        /// A setting as key=value; repeat for each.
        #[arg(long = "setting", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Stop a tenant's use of a plugin (its settings are kept).
    Disable {
        name: String,
        #[arg(long)]
        tenant: i64,
    },
    /// Run one call of a plugin in the real sandbox with no server, database
    /// or network: settings from --setting, HTTP answered in order from
    /// --respond. Prints the reply, what the call consumed, its logs and the
    /// HTTP requests it made, as JSON.
    Call {
        /// The plugin's folder: plugin.toml, and plugin.wasm unless --wasm.
        dir: PathBuf,
        /// The function, as the WIT names it: search, enrich, send,
        /// parse-callback, create-payment, refund, adjust-price.
        function: String,
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// The input as JSON, or a callback's raw body: a file, or - for
        /// standard input.
        #[arg(long)]
        input: Option<PathBuf>,
        /// A setting as key=value; repeat for each.
        #[arg(long = "setting", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// An HTTP answer as STATUS:FILE (FILE holds the body); the plugin's
        /// requests get them in order.
        #[arg(long = "respond", value_parser = parse_response)]
        responses: Vec<(u16, PathBuf)>,
        /// A callback's header as name=value; repeat for each.
        #[arg(long = "header", value_parser = parse_setting)]
        headers: Vec<(String, String)>,
    },
    /// Files a tenant uploads for a plugin, such as a CSV of leads.
    File {
        #[command(subcommand)]
        command: FileCommand,
    },
}

#[derive(Subcommand, Debug)]
enum FileCommand {
    /// Upload a file for a plugin, replacing one of the same name.
    Put {
        /// The plugin, such as csv-leads.
        plugin: String,
        path: PathBuf,
        #[arg(long)]
        tenant: i64,
        /// The name the plugin sees; the file's own name unless given.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the files uploaded for a plugin.
    List {
        plugin: String,
        #[arg(long)]
        tenant: i64,
    },
    /// Delete an uploaded file.
    Delete {
        plugin: String,
        name: String,
        #[arg(long)]
        tenant: i64,
    },
}

fn parse_response(text: &str) -> Result<(u16, PathBuf), String> {
    match text.split_once(':') {
        Some((status, file)) => match status.parse::<u16>() {
            Ok(status) if (100..=599).contains(&status) => Ok((status, PathBuf::from(file))),
            _ => Err(format!("{status:?} is not an HTTP status")),
        },
        None => Err(format!("{text:?} is not STATUS:FILE")),
    }
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Create a tenant with its credit wallet.
    Create {
        #[arg(long)]
        name: String,
        /// How far below zero the tenant may spend, in credits.
        #[arg(long, default_value = "0", allow_hyphen_values = true)]
        credit_limit: String,
        /// The reseller this tenant belongs to.
        #[arg(long, conflicts_with = "reseller")]
        parent: Option<i64>,
        /// Create a white-label reseller (its wallet is its wholesale
        /// account); its keys have the role `reseller`.
        #[arg(long)]
        reseller: bool,
    },
    /// Suspend a tenant: its keys, sessions and calls are refused until it
    /// is resumed (a reseller's tenants with it).
    Suspend {
        #[arg(long)]
        tenant: i64,
    },
    /// Resume a suspended tenant.
    Resume {
        #[arg(long)]
        tenant: i64,
    },
    /// Set where a tenant's (or a reseller's) system emails go, or stop
    /// them; show its latest emails and what became of each.
    Contact {
        #[arg(long)]
        tenant: i64,
        #[arg(long, conflicts_with = "clear")]
        email: Option<String>,
        #[arg(long)]
        clear: bool,
    },
    /// List tenants.
    List {
        /// Only this reseller's tenants.
        #[arg(long)]
        reseller: Option<i64>,
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum ResellerCommand {
    /// Replace a reseller's retail price list with a TOML file:
    /// `markup_percent`, `[[price]]` tables like pricing.toml's, and
    /// `[plans]` and `[packages]` tables of prices by id.
    SetPricing {
        #[arg(long)]
        reseller: i64,
        #[arg(long)]
        file: PathBuf,
    },
    /// Show a reseller's retail price list, and each plan's and package's
    /// wholesale and retail price.
    Pricing {
        #[arg(long)]
        reseller: i64,
    },
    /// Set the wallet balances (credits, comma-separated) below which a
    /// wholesale charge alerts the reseller; show its latest alerts.
    Alerts {
        #[arg(long)]
        reseller: i64,
        #[arg(long, value_delimiter = ',')]
        set: Option<Vec<String>>,
    },
    /// Approve the kinds (lead-source, channel) and HTTP hosts of a
    /// reseller's own plugins, replacing what was approved.
    Approve {
        #[arg(long)]
        reseller: i64,
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// An HTTP host its plugins may reach; repeat for each.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
    },
    /// Install (or upgrade) one of a reseller's own plugins from DIR
    /// (plugin.toml, and plugin.wasm unless --wasm): only it and its tenants
    /// see it, and only what was approved for it installs.
    InstallPlugin {
        #[arg(long)]
        reseller: i64,
        dir: PathBuf,
        #[arg(long)]
        wasm: Option<PathBuf>,
    },
    /// A reseller's margins: retail less wholesale, for calls by month,
    /// tenant and plugin, and for plan periods.
    Margins {
        #[arg(long)]
        reseller: i64,
        /// First month, YYYY-MM (default: --to).
        #[arg(long)]
        from: Option<String>,
        /// Last month, YYYY-MM (default: this month).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CreditsCommand {
    /// Grant credits to a tenant.
    Grant(GrantArgs),
    /// Show a tenant's balance and open grants.
    Balance {
        #[arg(long)]
        tenant: i64,
    },
    /// Show a tenant's transfers, newest first.
    History {
        #[arg(long)]
        tenant: i64,
        /// Show transfers older than this cursor (printed with the last page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Check every ledger invariant against the stored data.
    Audit,
}

#[derive(Args, Debug)]
struct GrantArgs {
    #[arg(long)]
    tenant: i64,
    /// Credits, e.g. 1000 or 12.5.
    #[arg(long, allow_hyphen_values = true)]
    amount: String,
    /// allowance, purchase, promotion or adjustment.
    #[arg(long, default_value = "adjustment")]
    source: String,
    /// When unspent credits expire (RFC 3339, e.g. 2027-01-01T00:00:00Z).
    #[arg(long)]
    expires_at: Option<String>,
    /// The transfer id; reuse it to retry safely. Made up when omitted.
    #[arg(long)]
    id: Option<String>,
    #[arg(long, default_value = "")]
    memo: String,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config, std::env::vars())
        .with_context(|| format!("loading configuration from {}", cli.config.display()))?;
    let url_text = cli
        .database_url
        .clone()
        .unwrap_or_else(|| config.settings.storage.database_url.clone());
    let url = DatabaseUrl::parse(&url_text, &config.settings.storage.data_dir)?;
    match cli.command {
        Commands::Serve { listen, demo } => serve(&config, &url, listen, demo),
        Commands::Migrate { revert_all } => migrate(&config, &url, revert_all),
        Commands::Tenant(command) => tenant(open(&config, &url)?, command),
        Commands::Reseller(command) => reseller(&config, open(&config, &url)?, command),
        Commands::Credits(command) => credits(&config, open(&config, &url)?, command),
        Commands::Plugin(PluginCommand::Call {
            dir,
            function,
            wasm,
            input,
            settings,
            responses,
            headers,
        }) => call_plugin(
            &dir,
            &function,
            wasm.as_deref(),
            input.as_deref(),
            &settings,
            &responses,
            headers,
        ),
        Commands::Plugin(command) => plugin(&config, open(&config, &url)?, command),
        Commands::Key(command) => key(open(&config, &url)?, command),
        Commands::Billing(command) => billing(&config, open(&config, &url)?, command),
    }
}

fn billing(config: &Config, database: Database, command: BillingCommand) -> anyhow::Result<()> {
    use tollgate::billing::{invoices, purchases, render};
    let money = |minor: i64, currency: &str| {
        let digits = tollgate::units::Currency::parse(currency)
            .map(|currency| currency.minor_digits())
            .unwrap_or(2);
        format!("{} {currency}", render::format_minor(minor, digits))
    };
    let print_document = |document: &invoices::Document| {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            document.id,
            document.display_number().unwrap_or_else(|| "draft".into()),
            document.state.as_str(),
            money(document.totals.total_minor, &document.currency),
            document.created_at
        );
    };
    if let BillingCommand::Plans = command {
        for plan in &config.plans {
            let tenant = plan
                .tenant
                .map_or_else(String::new, |tenant| format!("\ttenant {}", tenant.0));
            println!(
                "{}\t{}\t{} {}/{}\t{} credits{tenant}",
                plan.id,
                plan.name,
                plan.price.to_decimal(),
                plan.price.currency,
                match plan.interval {
                    tollgate::config::Interval::Month => "month",
                    tollgate::config::Interval::Year => "year",
                },
                plan.credits
            );
        }
        return Ok(());
    }
    let ledger = start_ledger(config, &database)?;
    let Services {
        subscriptions,
        payments,
        issuer,
        ..
    } = services(config, &database, ledger)?;
    let mut conn = database.get()?;
    match command {
        BillingCommand::Plans => unreachable!("answered above"),
        BillingCommand::Subscribe { tenant, plan } => {
            let (subscription, invoice) = subscriptions.subscribe(TenantId(tenant), &plan)?;
            println!(
                "subscription {} to {} ({}); invoice:",
                subscription.id,
                subscription.plan,
                subscription.state.as_str()
            );
            print_document(&invoice);
        }
        BillingCommand::Purchase { tenant, package } => {
            let (purchase, invoice) = purchases::buy(
                &mut conn,
                &issuer,
                &config.pricing.packages,
                TenantId(tenant),
                &package,
                SystemClock.now(),
            )?;
            println!(
                "purchase {} of {} credits; invoice:",
                purchase.id, purchase.credits
            );
            print_document(&invoice);
        }
        BillingCommand::Invoices {
            tenant,
            credit_notes,
        } => {
            let kind = match credit_notes {
                true => invoices::Kind::CreditNote,
                false => invoices::Kind::Invoice,
            };
            let mut after = None;
            loop {
                let page = invoices::list(&mut conn, TenantId(tenant), kind, after, 100)?;
                page.iter().for_each(print_document);
                match page.last() {
                    Some(last) if page.len() == 100 => after = Some(last.id),
                    _ => break,
                }
            }
        }
        BillingCommand::Render { id, tenant, out } => {
            let tenant = TenantId(tenant);
            let document = invoices::get(&mut conn, tenant, id)?;
            let customer = tenants::find(&mut conn, tenant)?.name;
            let credited = match document.credits_invoice {
                Some(invoice) => invoices::get(&mut conn, tenant, invoice)?.display_number(),
                None => None,
            };
            let address = tollgate::branding::issuer_address(&mut conn, &document, &issuer)?;
            let sheet = render::Sheet::new(
                &document,
                &render::Parties {
                    issuer_address: &address,
                    customer: &customer,
                    credited_number: credited.as_deref(),
                },
            );
            let bytes = match out.extension().and_then(|extension| extension.to_str()) {
                Some("pdf") => render::pdf(&sheet),
                Some("html") => render::html(&sheet)?.into_bytes(),
                _ => anyhow::bail!("--out {}: name a .pdf or .html file", out.display()),
            };
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} to {}", sheet.number, out.display());
        }
        BillingCommand::RecordPayment { tenant, invoice } => {
            match payments.record_received(TenantId(tenant), invoice)? {
                tollgate::billing::payments::Settled::Purchase(purchase) => println!(
                    "invoice {invoice} paid: {} credits of package {} granted",
                    purchase.credits, purchase.package
                ),
                tollgate::billing::payments::Settled::Subscription(subscription) => println!(
                    "invoice {invoice} paid: subscription {} is {}",
                    subscription.id,
                    subscription.state.as_str()
                ),
            }
        }
        BillingCommand::Payments { tenant } => {
            for payment in payments.list(TenantId(tenant))? {
                println!(
                    "{}\tinvoice {}\t{}\t{}\t{}\t{}",
                    payment.id,
                    payment.invoice,
                    payment.provider,
                    money(payment.amount_minor, &payment.currency),
                    payment.state.as_str(),
                    payment.failure_reason.unwrap_or_default()
                );
            }
        }
        BillingCommand::Refund { tenant, payment } => {
            let (refund, note) = payments.refund(TenantId(tenant), payment)?;
            println!(
                "refund {} of payment {payment}: {}; {} credits taken back; credit note {}",
                refund.id,
                refund.state.as_str(),
                refund.credits_revoked,
                note.display_number().unwrap_or_default()
            );
        }
        BillingCommand::Renew => {
            let mut renewed = 0;
            loop {
                let moved = subscriptions.renew_due()?;
                renewed += moved;
                if moved == 0 {
                    break;
                }
            }
            let collected = payments.collect_due()?;
            println!("{renewed} periods renewed, {collected} payments attempted");
        }
    }
    Ok(())
}

/// Opens the database, creating and migrating it if it is new.
fn open(config: &Config, url: &DatabaseUrl) -> anyhow::Result<Database> {
    let database = Database::open(url, config.settings.storage.pool_size)?;
    for name in database.migrate()? {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(database)
}

fn migrate(config: &Config, url: &DatabaseUrl, revert_all: bool) -> anyhow::Result<()> {
    let database = Database::open(url, config.settings.storage.pool_size)?;
    let (verb, names) = match revert_all {
        true => ("reverted", database.revert_all()?),
        false => ("applied", database.migrate()?),
    };
    if names.is_empty() {
        println!("{}: nothing to do", url.redacted());
    }
    for name in names {
        println!("{verb} {name}");
    }
    Ok(())
}

fn start_ledger(config: &Config, database: &Database) -> anyhow::Result<Ledger> {
    Ledger::start(
        database.clone(),
        Arc::new(SystemClock),
        WriterOptions::from_settings(&config.settings.ledger),
    )
}

fn serve(
    config: &Config,
    url: &DatabaseUrl,
    listen: Option<std::net::SocketAddr>,
    demo: bool,
) -> anyhow::Result<()> {
    let database = open(config, url)?;
    let ledger = start_ledger(config, &database)?;
    let Services {
        ledger,
        secrets,
        meter,
        issuer,
        subscriptions,
        payments,
    } = services(config, &database, ledger)?;
    if demo {
        tollgate::demo::seed(
            &database,
            &ledger,
            &SystemClock,
            &secrets,
            &config.settings.storage.data_dir.join("demo-api-key"),
        )?;
    }
    let adopted =
        tollgate::analytics::mrr::adopt(&mut *database.get()?, &config.plans, SystemClock.now())?;
    if adopted > 0 {
        tracing::info!(
            tenants = adopted,
            "MRR tracked from now for subscriptions older than the analytics tables"
        );
    }
    // Calls a crash interrupted are settled before new ones are taken.
    let recovered = meter.recover()?;
    if recovered > 0 {
        tracing::info!(
            calls = recovered,
            "settled calls interrupted by the last stop"
        );
    }
    let listen = listen.unwrap_or(config.settings.server.listen);
    let sweep = Duration::from_secs(u64::from(
        config.settings.ledger.expiry_sweep_seconds.max(1),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!(
            address = %listener.local_addr()?,
            database = %database.url().redacted(),
            dashboard = %format!("http://{}/", listener.local_addr()?),
            "tollgate is serving"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(scheduler::run(
            ledger.clone(),
            Some(meter.clone()),
            Some(payments.clone()),
            sweep,
            {
                let mut stopped = stopped.clone();
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                }
            },
        ));
        let engagement = Arc::new(api::sequences::Engagement {
            public_url: config.settings.server.public_url(),
            clock: Arc::new(SystemClock),
        });
        let runner = Arc::new(tollgate::engagement::runner::Runner {
            database: database.clone(),
            meter: meter.clone(),
            clock: engagement.clock.clone(),
            links: tollgate::engagement::runner::Links {
                public_url: engagement.public_url.clone(),
                secrets: secrets.clone(),
            },
            owner: format!("host-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
        });
        let sequencer = tokio::spawn(scheduler::run_sequences(runner, SEQUENCE_TICK, {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        }));
        let mailer = tollgate::mail::Mailer {
            database: database.clone(),
            settings: config.settings.mail.clone(),
            platform: issuer.clone(),
            public_url: engagement.public_url.clone(),
            clock: Arc::new(SystemClock),
        };
        let postman = tokio::spawn(scheduler::run_mail(mailer, MAIL_TICK, {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        }));
        let closing = meter.clone();
        let app = api::router(api::AppState::new(api::Services {
            database,
            ledger,
            meter,
            secrets,
            keys: Default::default(),
            issuer,
            subscriptions,
            packages: Arc::new(config.pricing.packages.clone()),
            payments,
            analytics: Arc::new(api::analytics::Analytics::new(
                &config.settings,
                &config.pricing,
            )),
            rate_limits: Arc::new(api::rate_limits(
                config.settings.limits.tenant_requests_per_second,
                config.settings.limits.tenant_burst,
            )),
            body_bytes_max: config.settings.limits.request_body_bytes_max as usize,
            engagement,
        }));
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing requests in flight");
                let _ = stop.send(true);
            })
            .await
            .context("serving HTTP")?;
        let _ = sweeper.await;
        let _ = sequencer.await;
        let _ = postman.await;
        // Calls still settling finish on their leases, which go back.
        tokio::task::spawn_blocking(move || closing.close_leases())
            .await
            .context("giving back wallet leases")?;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn key(database: Database, command: KeyCommand) -> anyhow::Result<()> {
    use tollgate::auth::{self, Role};
    let mut conn = database.get()?;
    match command {
        KeyCommand::Create { role, tenant, name } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role {role:?}: use operator, admin or member"))?;
            let (key, secret) = auth::create_key(
                &mut conn,
                tenant.map(TenantId),
                role,
                &name,
                SystemClock.now(),
            )?;
            eprintln!(
                "created {} key {} {:?}; it is shown only now, so store it safely:",
                key.role, key.id, key.name
            );
            println!("{secret}");
        }
        KeyCommand::List { tenant } => {
            for key in auth::list_keys(&mut conn, tenant.map(TenantId))? {
                let state = match key.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".to_owned(),
                };
                println!(
                    "{}\t{}\t{}…\t{}\tcreated {}\t{state}",
                    key.id, key.role, key.prefix, key.name, key.created_at
                );
            }
        }
        KeyCommand::Revoke { id, tenant } => {
            auth::revoke_key(&mut conn, tenant.map(TenantId), id, SystemClock.now())?;
            println!("revoked key {id}");
        }
    }
    Ok(())
}

fn tenant(database: Database, command: TenantCommand) -> anyhow::Result<()> {
    let mut conn = database.get()?;
    match command {
        TenantCommand::Create {
            name,
            credit_limit,
            parent,
            reseller,
        } => {
            let credit_limit = Credits::parse(&credit_limit).context("--credit-limit")?;
            let now = SystemClock.now();
            let (tenant, wallet) = match (reseller, parent) {
                (true, _) => tenants::create_reseller(&mut conn, &name, credit_limit, now)?,
                (false, Some(parent)) => tenants::create_for_reseller(
                    &mut conn,
                    TenantId(parent),
                    &name,
                    credit_limit,
                    now,
                )?,
                (false, None) => tenants::create(&mut conn, &name, None, credit_limit, now)?,
            };
            println!(
                "created {} {} {:?} with wallet account {wallet}",
                tenant.kind.as_str(),
                tenant.id,
                tenant.name
            );
        }
        TenantCommand::Suspend { tenant } | TenantCommand::Resume { tenant } => {
            let suspend = matches!(command, TenantCommand::Suspend { .. });
            let tenant = tenants::set_suspended(
                &mut conn,
                TenantId(tenant),
                suspend,
                tenants::Suspender::Operator,
                SystemClock.now(),
            )?;
            match tenant.suspended_at {
                Some(at) => println!("tenant {} suspended since {at}", tenant.id),
                None => println!("tenant {} resumed", tenant.id),
            }
        }
        TenantCommand::Contact {
            tenant,
            email,
            clear,
        } => {
            let tenant = TenantId(tenant);
            let found = match (email, clear) {
                (Some(email), _) => tenants::set_email(&mut conn, tenant, Some(&email))?,
                (None, true) => tenants::set_email(&mut conn, tenant, None)?,
                (None, false) => tenants::find(&mut conn, tenant)?,
            };
            match &found.email {
                Some(email) => println!("tenant {tenant}: system emails go to {email}"),
                None => println!("tenant {tenant}: no contact address, so no system emails"),
            }
            for email in tollgate::mail::list(&mut conn, tenant, 20)? {
                println!(
                    "{}	{} {}	to {}	{}	{} attempts	{}",
                    Timestamp::from_micros(email.created_at),
                    email.topic,
                    email.subject_id,
                    email.recipient,
                    email.state,
                    email.attempts,
                    email.last_error.unwrap_or_default()
                );
            }
        }
        TenantCommand::List {
            reseller,
            after,
            limit,
        } => {
            let after = after.map(TenantId);
            let listed = match reseller {
                Some(reseller) => {
                    let reseller = TenantId(reseller);
                    if tenants::find(&mut conn, reseller)?.kind != tenants::Kind::Reseller {
                        anyhow::bail!("tenant {reseller} is not a reseller");
                    }
                    tenants::list_of_reseller(&mut conn, reseller, after, limit)?
                }
                None => tenants::list(&mut conn, after, limit)?,
            };
            for tenant in listed {
                let parent = tenant.parent.map(|parent| format!(" parent {parent}"));
                let kind = match tenant.kind {
                    tenants::Kind::Reseller => " reseller",
                    tenants::Kind::Tenant => "",
                };
                println!(
                    "{}\t{}\t{}{}{}",
                    tenant.id,
                    tenant.name,
                    tenant.created_at,
                    kind,
                    parent.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn reseller(config: &Config, database: Database, command: ResellerCommand) -> anyhow::Result<()> {
    use tollgate::resale::{self, RetailPrices};
    let mut conn = database.get()?;
    let checked = |conn: &mut DbConnection, id: i64| -> anyhow::Result<TenantId> {
        let id = TenantId(id);
        if tenants::find(conn, id)?.kind != tenants::Kind::Reseller {
            anyhow::bail!("tenant {id} is not a reseller");
        }
        Ok(id)
    };
    match command {
        ResellerCommand::SetPricing { reseller, file } => {
            let reseller = checked(&mut conn, reseller)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
            let mut document = serde_json::to_value(table)?;
            // `[[price]]` as in pricing.toml; `prices` in the API.
            if let Some(prices) = document.as_object_mut().and_then(|map| map.remove("price")) {
                document["prices"] = prices;
            }
            let document: resale::PricingDocument =
                serde_json::from_value(document).with_context(|| format!("{}", file.display()))?;
            let prices = RetailPrices::parse(&document)?;
            prices.check_products(&config.plans, &config.pricing.packages)?;
            for price in &prices.book.prices {
                if let Some(tenant) = price.tenant {
                    tenants::find_of_reseller(&mut conn, reseller, tenant).with_context(|| {
                        format!("tenant {tenant} is not one of reseller {reseller}'s tenants")
                    })?;
                }
            }
            let mut settings = resale::settings(&mut conn, reseller)?;
            settings.pricing = document;
            resale::store(&mut conn, reseller, &settings, SystemClock.now())?;
            println!(
                "reseller {reseller}: {}% markup, {} prices, {} plan and {} package prices",
                prices.markup_percent,
                prices.book.prices.len(),
                prices.plans.len(),
                prices.packages.len()
            );
        }
        ResellerCommand::Pricing { reseller } => {
            let reseller = checked(&mut conn, reseller)?;
            let settings = resale::settings(&mut conn, reseller)?;
            let prices = RetailPrices::parse(&settings.pricing)?;
            println!("markup\t{}%", prices.markup_percent);
            for plan in config.plans.iter().filter(|plan| plan.tenant.is_none()) {
                println!(
                    "plan\t{}\twholesale {}\tretail {}",
                    plan.id,
                    plan.price,
                    prices.plan(plan).price
                );
            }
            for package in &config.pricing.packages {
                println!(
                    "package\t{}\twholesale {}\tretail {}",
                    package.id,
                    package.price,
                    prices.package(package).price
                );
            }
            for price in &prices.book.prices {
                println!("price\t{} {}\tits own", price.plugin, price.function);
            }
        }
        ResellerCommand::Alerts { reseller, set } => {
            let reseller = checked(&mut conn, reseller)?;
            if let Some(set) = set {
                let thresholds = set
                    .iter()
                    .map(|text| {
                        Credits::parse(text.trim()).with_context(|| format!("--set {text}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut settings = resale::settings(&mut conn, reseller)?;
                settings.thresholds = resale::check_thresholds(thresholds)?;
                resale::store(&mut conn, reseller, &settings, SystemClock.now())?;
            }
            let settings = resale::settings(&mut conn, reseller)?;
            let thresholds: Vec<String> = settings
                .thresholds
                .iter()
                .map(ToString::to_string)
                .collect();
            println!("thresholds\t{}", thresholds.join(", "));
            for alert in resale::alerts(&mut conn, reseller, 100)? {
                println!(
                    "alert\t{}\tbelow {}\tbalance {}",
                    alert.created_at, alert.threshold, alert.balance
                );
            }
        }
        ResellerCommand::Approve {
            reseller,
            kinds,
            allow_hosts,
        } => {
            let reseller = checked(&mut conn, reseller)?;
            let kinds = kinds
                .iter()
                .map(|kind| {
                    plugins::RESOLD_KINDS
                        .into_iter()
                        .find(|known| known.as_str() == kind)
                        .with_context(|| format!("--kinds: {kind:?} is not lead-source or channel"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let approval = plugins::Approval {
                kinds,
                http_hosts: allow_hosts,
            };
            plugins::set_approval(&mut conn, reseller, &approval, SystemClock.now())?;
            let kinds: Vec<&str> = approval.kinds.iter().map(|kind| kind.as_str()).collect();
            println!(
                "reseller {reseller} may install {} plugins reaching {}",
                if kinds.is_empty() {
                    "no".into()
                } else {
                    kinds.join(" and ")
                },
                if approval.http_hosts.is_empty() {
                    "no host".into()
                } else {
                    approval.http_hosts.join(", ")
                }
            );
        }
        ResellerCommand::InstallPlugin {
            reseller,
            dir,
            wasm,
        } => {
            let reseller = checked(&mut conn, reseller)?;
            let manifest_path = dir.join(plugins::MANIFEST_FILE);
            let manifest = std::fs::read_to_string(&manifest_path)
                .with_context(|| format!("reading {}", manifest_path.display()))?;
            let wasm_path = wasm.unwrap_or_else(|| dir.join("plugin.wasm"));
            let wasm = std::fs::read(&wasm_path)
                .with_context(|| format!("reading {}", wasm_path.display()))?;
            let runtime = Runtime::new(runtime_config(config))?;
            let installed = plugins::install_for_reseller(
                &mut conn,
                &runtime,
                reseller,
                &manifest,
                &wasm,
                SystemClock.now(),
            )?;
            println!(
                "installed {} {} ({}) for reseller {reseller} and its tenants",
                installed.name, installed.version, installed.kind
            );
        }
        ResellerCommand::Margins { reseller, from, to } => {
            let reseller = checked(&mut conn, reseller)?;
            let to = to.unwrap_or_else(|| tollgate::metering::period_of(SystemClock.now()));
            let from = from.unwrap_or_else(|| to.clone());
            let (mut retail, mut wholesale) = (0_i64, 0_i64);
            for row in resale::call_margins(&mut conn, reseller, &from, &to)? {
                println!(
                    "calls\t{}\ttenant {}\t{}\t{} calls\tretail {}\twholesale {}\tmargin {}",
                    row.period,
                    row.tenant,
                    row.plugin,
                    row.calls,
                    row.retail,
                    row.wholesale,
                    row.margin
                );
                retail += row.retail.micros();
                wholesale += row.wholesale.micros();
            }
            println!(
                "calls\ttotal\tretail {}\twholesale {}\tmargin {}",
                Credits::from_micros(retail),
                Credits::from_micros(wholesale),
                Credits::from_micros(retail - wholesale)
            );
            for row in resale::plan_margins(&mut conn, reseller, &from, &to)? {
                let currency = tollgate::units::Currency::parse(&row.currency)?;
                let money = |minor| tollgate::units::Money { minor, currency };
                println!(
                    "plan\t{}\ttenant {}\tinvoice {}\t{}\tretail {}\twholesale {}\tmargin {}",
                    row.period,
                    row.tenant,
                    row.invoice,
                    row.description,
                    money(row.retail_minor),
                    money(row.wholesale_minor),
                    money(row.retail_minor - row.wholesale_minor)
                );
            }
        }
    }
    Ok(())
}

fn credits(config: &Config, database: Database, command: CreditsCommand) -> anyhow::Result<()> {
    let mut conn = database.get()?;
    match command {
        CreditsCommand::Grant(args) => {
            let wallet = queries::wallet_of(&mut conn, TenantId(args.tenant))?;
            drop(conn);
            let command = grant_command(wallet, &args)?;
            let ledger = start_ledger(config, &database)?;
            let receipt = ledger.submit_blocking(command)?;
            let replayed = match receipt.replayed {
                true => " (already applied; nothing moved)",
                false => "",
            };
            println!(
                "granted {} credits to tenant {} as transfer {}{replayed}",
                receipt.transfer.amount, args.tenant, receipt.transfer.id
            );
        }
        CreditsCommand::Balance { tenant } => {
            let wallet = queries::wallet_of(&mut conn, TenantId(tenant))?;
            let balance = queries::balance(&mut conn, wallet)?;
            println!("tenant {tenant} (account {wallet})");
            println!("  posted     {}", balance.posted);
            println!("  pending    {}", balance.pending);
            println!("  available  {}", balance.available);
            let limit = balance.credit_limit.unwrap_or(Credits::ZERO);
            println!("  limit      {limit}");
            for grant in queries::grants_of(&mut conn, wallet, true)? {
                let expiry = grant
                    .expires_at
                    .map_or("never".to_owned(), |at| at.to_string());
                println!(
                    "  grant {} {}: {} of {} left, {} reserved, expires {expiry}",
                    grant.id,
                    grant.source.as_str(),
                    grant.remaining,
                    grant.amount,
                    grant.reserved
                );
            }
        }
        CreditsCommand::History {
            tenant,
            before,
            limit,
        } => {
            let wallet = queries::wallet_of(&mut conn, TenantId(tenant))?;
            let page = queries::history(&mut conn, wallet, before, limit)?;
            for (seq, transfer) in &page.entries {
                let sign = if transfer.credit == wallet { "+" } else { "-" };
                let signed = match transfer.kind.is_posted() {
                    true => format!("{sign}{}", transfer.amount),
                    false => format!("({sign}{} pending)", transfer.amount),
                };
                println!(
                    "{seq}\t{}\t{}\t{signed}\t{}\t{}",
                    transfer.created_at,
                    transfer.kind.as_str(),
                    transfer.id,
                    transfer.memo
                );
            }
            if let Some(next) = page.next {
                println!("more: --before {next}");
            }
        }
        CreditsCommand::Audit => {
            let report = ledger::audit::audit(&mut conn)?;
            println!(
                "audited {} accounts and {} transfers",
                report.n_accounts, report.n_transfers
            );
            if !report.is_clean() {
                for violation in &report.violations {
                    println!("VIOLATION {violation}");
                }
                anyhow::bail!("{} invariant violations", report.violations.len());
            }
            println!("all invariants hold");
        }
    }
    Ok(())
}

fn plugin(config: &Config, database: Database, command: PluginCommand) -> anyhow::Result<()> {
    let mut conn = database.get()?;
    match &command {
        PluginCommand::Install {
            dir,
            wasm,
            allow_hosts,
        }
        | PluginCommand::Upgrade {
            dir,
            wasm,
            allow_hosts,
        } => {
            let is_upgrade = matches!(command, PluginCommand::Upgrade { .. });
            let manifest_path = dir.join(plugins::MANIFEST_FILE);
            let manifest = std::fs::read_to_string(&manifest_path)
                .with_context(|| format!("reading {}", manifest_path.display()))?;
            let wasm_path = wasm.clone().unwrap_or_else(|| dir.join("plugin.wasm"));
            let wasm = std::fs::read(&wasm_path)
                .with_context(|| format!("reading {}", wasm_path.display()))?;
            let runtime = Runtime::new(runtime_config(config))?;
            let now = SystemClock.now();
            let (verb, installed) = match is_upgrade {
                true => (
                    "upgraded to",
                    plugins::upgrade(&mut conn, &runtime, &manifest, &wasm, allow_hosts, now)?,
                ),
                false => (
                    "installed",
                    plugins::install(&mut conn, &runtime, &manifest, &wasm, allow_hosts, now)?,
                ),
            };
            println!(
                "{verb} {} {} ({}, API {}, sha256 {})",
                installed.name,
                installed.version,
                installed.kind,
                installed.api_version,
                installed.wasm_sha256
            );
        }
        PluginCommand::Build { dir } => {
            let runtime = Runtime::new(runtime_config(config))?;
            let (manifest, size) = build_plugin(&runtime, dir)?;
            println!(
                "built {}: {size} bytes, a {} plugin for API {}; install it with `tollgate plugin install {}`",
                dir.join("plugin.wasm").display(),
                manifest.kind,
                manifest.api_version,
                dir.display()
            );
        }
        PluginCommand::Remove { name } => {
            plugins::remove(&mut conn, name)?;
            println!("removed {name}");
        }
        PluginCommand::List => {
            for version in plugins::list(&mut conn)? {
                let active = if version.active { "active" } else { "" };
                println!(
                    "{}\t{}\t{}\tAPI {}\t{active}",
                    version.name, version.version, version.kind, version.api_version
                );
            }
        }
        PluginCommand::Enable {
            name,
            tenant,
            settings,
        } => {
            let tenant = tenants::find(&mut conn, TenantId(*tenant))?.id;
            let settings = settings.iter().cloned().collect();
            let secrets = SecretBox::from_key_file(&config.settings.storage.secret_key_path())?;
            plugins::enable(
                &mut conn,
                &secrets,
                tenant,
                name,
                &settings,
                SystemClock.now(),
            )?;
            println!("enabled {name} for tenant {tenant}");
        }
        PluginCommand::Disable { name, tenant } => {
            match plugins::disable(&mut conn, TenantId(*tenant), name, SystemClock.now())? {
                true => println!("disabled {name} for tenant {tenant}"),
                false => anyhow::bail!("plugin {name} is not enabled for tenant {tenant}"),
            }
        }
        PluginCommand::File { command } => file_command(&mut conn, command)?,
        PluginCommand::Call { .. } => unreachable!("run() calls call_plugin without a database"),
    }
    Ok(())
}

fn call_plugin(
    dir: &std::path::Path,
    function: &str,
    wasm: Option<&std::path::Path>,
    input: Option<&std::path::Path>,
    settings: &[(String, String)],
    responses: &[(u16, PathBuf)],
    headers: Vec<(String, String)>,
) -> anyhow::Result<()> {
    use tollgate::sandbox::{self, Sandbox};
    let mut sandbox = Sandbox::from_dir(dir, wasm)?;
    for (name, value) in settings {
        sandbox.setting(name, value);
    }
    for (status, file) in responses {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        sandbox.http().respond(*status, &[], &body);
    }
    let input = match input {
        None => b"{}".to_vec(),
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading standard input")?;
            bytes
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    };
    let headers = headers
        .into_iter()
        .map(|(name, value)| tollgate::runtime::Field { name, value })
        .collect();
    let call = sandbox::parse_call(sandbox.manifest().kind, function, &input, headers)?;
    let invocation = sandbox.call(call)?;
    let (result, units) = match &invocation.result {
        Ok(reply) => (
            serde_json::json!({ "ok": sandbox::reply_json(reply) }),
            reply.units(),
        ),
        Err(error) => (serde_json::json!({ "error": error.to_string() }), 0),
    };
    let requests: Vec<serde_json::Value> = sandbox
        .http()
        .requests()
        .into_iter()
        .map(|request| {
            serde_json::json!({
                "method": request.method,
                "url": request.url,
                "headers": request.headers,
                "body": String::from_utf8_lossy(&request.body),
            })
        })
        .collect();
    let report = serde_json::json!({
        "result": result,
        "units": units,
        "fuel": invocation.fuel_consumed,
        "duration_us": invocation.duration.as_micros() as u64,
        "logs": invocation.logs.iter().map(|line| format!("{}: {}", line.level, line.message)).collect::<Vec<_>>(),
        "http_requests": requests,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("JSON values serialize")
    );
    if invocation.result.is_err() {
        std::process::exit(1);
    }
    Ok(())
}

fn file_command(conn: &mut DbConnection, command: &FileCommand) -> anyhow::Result<()> {
    use tollgate::plugins::kv;
    let (FileCommand::Put { plugin, tenant, .. }
    | FileCommand::List { plugin, tenant }
    | FileCommand::Delete { plugin, tenant, .. }) = command;
    let tenant = tenants::find(conn, TenantId(*tenant))?.id;
    plugins::active_manifest(conn, plugin)?;
    match command {
        FileCommand::Put { path, name, .. } => {
            let name = match name {
                Some(name) => name.clone(),
                None => path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .with_context(|| {
                        format!("{} has no file name; give one with --name", path.display())
                    })?
                    .to_owned(),
            };
            let metadata =
                std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
            if metadata.len() > kv::FILE_BYTES_MAX as u64 {
                anyhow::bail!(kv::FileError::TooLarge {
                    size: metadata.len() as usize
                });
            }
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let entry = kv::put_file(conn, tenant, plugin, &name, &bytes, SystemClock.now())?;
            println!(
                "uploaded {} for {plugin} ({} bytes, sha256 {})",
                entry.name, entry.size, entry.sha256
            );
        }
        FileCommand::List { .. } => {
            println!("{:<40} {:>10}  {:<24}  sha256", "name", "bytes", "uploaded");
            for file in kv::list_files(conn, tenant, plugin)? {
                let uploaded = Timestamp::from_micros(file.uploaded_at_ms as i64 * 1_000);
                println!(
                    "{:<40} {:>10}  {:<24}  {}",
                    file.name,
                    file.size,
                    uploaded.to_string(),
                    file.sha256
                );
            }
        }
        FileCommand::Delete { name, .. } => {
            kv::delete_file(conn, tenant, plugin, name, SystemClock.now())?;
            println!("deleted {name} for {plugin}");
        }
    }
    Ok(())
}

/// Builds the crate in `dir` with cargo, copies the component beside the
/// manifest, and checks the pair. Hosts are the operator's to approve at
/// install, so the build checks everything but that.
fn build_plugin(
    runtime: &Runtime,
    dir: &std::path::Path,
) -> anyhow::Result<(plugins::Manifest, usize)> {
    let manifest_path = dir.join(plugins::MANIFEST_FILE);
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest = plugins::Manifest::parse(&manifest_text)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo (is it on PATH?)")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo could not build {}; is the target installed? (rustup target add wasm32-wasip2)",
        dir.display()
    );
    // The component is the .wasm artifact cargo reports for the cdylib.
    let wasm_path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| {
            message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .rfind(|name| name.ends_with(".wasm"))
        .with_context(|| {
            format!(
                "cargo built no .wasm in {}; is crate-type [\"cdylib\"] set?",
                dir.display()
            )
        })?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("reading {wasm_path}"))?;
    plugins::check(runtime, &manifest_text, &wasm, &manifest.http_hosts)?;
    std::fs::write(dir.join("plugin.wasm"), &wasm)
        .with_context(|| format!("writing {}", dir.join("plugin.wasm").display()))?;
    Ok((manifest, wasm.len()))
}

/// What serving and the operator's billing commands run on.
struct Services {
    ledger: Ledger,
    secrets: Arc<SecretBox>,
    meter: Arc<tollgate::metering::Meter>,
    issuer: Arc<tollgate::billing::invoices::Issuer>,
    subscriptions: Arc<tollgate::billing::subscriptions::Subscriptions>,
    payments: Arc<tollgate::billing::payments::Payments>,
}

/// Installs the first-party plugins (a newer build of one replaces the
/// installed version), and builds the meter and billing over `ledger`.
fn services(config: &Config, database: &Database, ledger: Ledger) -> anyhow::Result<Services> {
    let plugin_runtime = Arc::new(Runtime::new(runtime_config(config))?);
    let first_party =
        plugins::install_first_party(&mut *database.get()?, &plugin_runtime, SystemClock.now())?;
    for plugin in first_party {
        tracing::info!(plugin = %plugin.name, version = %plugin.version, "installed first-party plugin");
    }
    let secrets = Arc::new(SecretBox::from_key_file(
        &config.settings.storage.secret_key_path(),
    )?);
    let meter = Arc::new(tollgate::metering::Meter::new(
        database.clone(),
        ledger.clone(),
        Arc::new(plugins::Registry::new(plugin_runtime)),
        secrets.clone(),
        Arc::new(config.pricing.book.clone()),
        Arc::new(SystemClock),
        tollgate::runtime::HttpPolicy::default(),
        Duration::from_secs(u64::from(
            config.settings.ledger.hold_timeout_seconds_default.max(1),
        )),
    ));
    meter.lease_after_calls(config.settings.ledger.lease_after_calls);
    let issuer = Arc::new(tollgate::billing::invoices::Issuer::from_settings(
        &config.settings.billing,
    ));
    let subscriptions = Arc::new(tollgate::billing::subscriptions::Subscriptions {
        database: database.clone(),
        ledger: ledger.clone(),
        plans: Arc::new(config.plans.clone()),
        issuer: issuer.clone(),
        clock: Arc::new(SystemClock),
    });
    let payments = Arc::new(tollgate::billing::payments::Payments::new(
        meter.clone(),
        subscriptions.clone(),
        &config.settings.payments,
    ));
    Ok(Services {
        ledger,
        secrets,
        meter,
        issuer,
        subscriptions,
        payments,
    })
}

fn runtime_config(config: &Config) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(config.settings.storage.data_dir.join("cache")),
        ..RuntimeConfig::default()
    }
}

fn grant_command(wallet: ledger::AccountId, args: &GrantArgs) -> anyhow::Result<Command> {
    let amount = Credits::parse(&args.amount).context("--amount")?;
    let source = GrantSource::parse(&args.source).with_context(|| {
        format!(
            "--source {:?}: use allowance, purchase, promotion or adjustment",
            args.source
        )
    })?;
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text)
                .with_context(|| format!("--expires-at {text:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    let id = match &args.id {
        Some(id) => TransferId::new(id.clone())?,
        None => TransferId::new(format!(
            "cli-grant-{}-{:08x}",
            SystemClock.now().micros(),
            rand::random::<u32>()
        ))?,
    };
    Ok(Command::Grant {
        id,
        account: wallet,
        source,
        amount,
        expires_at,
        priority: None,
        memo: args.memo.clone(),
    })
}
