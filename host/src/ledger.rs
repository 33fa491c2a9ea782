//! The credit ledger: accounts, grants, transfers, two-phase holds and
//! balances, double-entry and append-only, in the spirit of TigerBeetle.
//!
//! Every movement of credits is a transfer with an id chosen by the caller,
//! from one account to another. Transfers are never updated or deleted; the
//! same id with the same content returns the first result and moves nothing,
//! the same id with other content is refused. Credits reach a tenant's wallet
//! only as grants (allowance, purchase, promotion, adjustment), each with an
//! optional expiry, and spending draws on them by priority, then earliest
//! expiry, then age. Holds reserve credits and are later posted (fully or in
//! part), voided, or timed out, exactly once.
//!
//! All writes go through one writer thread per process that applies the
//! commands of concurrent callers in order and commits them together (group
//! commit); see `writer`. Reads use the pool. The ledger knows nothing of
//! prices, plugins or HTTP.

mod apply;
pub mod audit;
pub mod queries;
mod rows;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::db::Database;
use crate::units::{Clock, Credits, Timestamp};

pub use writer::{Attached, Attachment, Stats, WriterOptions};

/// Longest transfer id a caller may choose.
pub const TRANSFER_ID_BYTES_MAX: usize = 128;

/// Longest memo kept with a transfer.
pub const MEMO_BYTES_MAX: usize = 256;

/// Commands waiting for the writer at most; callers beyond this wait their
/// turn, which bounds memory under overload instead of queueing forever.
pub const QUEUE_COMMANDS_MAX: usize = 100_000;

/// Most commands one call may submit at once.
pub const COMMANDS_PER_CALL_MAX: usize = 10_000;

/// A ledger account's id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AccountId(pub i64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The platform's own accounts. Their ids are fixed by the first migration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlatformAccount {
    /// Receives spent credits.
    Revenue,
    /// Source of subscription allowances.
    Allowances,
    /// Source of purchased credits.
    Purchases,
    /// Source of promotional credits.
    Promotions,
    /// Source (or sink) of manual corrections.
    Adjustments,
    /// Receives credits that expired unspent.
    Expired,
}

impl PlatformAccount {
    pub const ALL: [PlatformAccount; 6] = [
        PlatformAccount::Revenue,
        PlatformAccount::Allowances,
        PlatformAccount::Purchases,
        PlatformAccount::Promotions,
        PlatformAccount::Adjustments,
        PlatformAccount::Expired,
    ];

    pub const fn id(self) -> AccountId {
        AccountId(match self {
            PlatformAccount::Revenue => 1,
            PlatformAccount::Allowances => 2,
            PlatformAccount::Purchases => 3,
            PlatformAccount::Promotions => 4,
            PlatformAccount::Adjustments => 5,
            PlatformAccount::Expired => 6,
        })
    }
}

/// A transfer's id, chosen by whoever asks for the transfer. It doubles as
/// the idempotency key: asking again with the same id is always safe.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(String);

impl TransferId {
    /// 1 to 128 bytes of ASCII letters, digits, `.`, `_`, `-` and `:`. Ids
    /// that the ledger makes itself begin with `~`, so they never collide.
    pub fn new(id: impl Into<String>) -> Result<TransferId, LedgerError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= TRANSFER_ID_BYTES_MAX
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-:".contains(&byte));
        match valid {
            true => Ok(TransferId(id)),
            false => Err(LedgerError::InvalidTransferId(id)),
        }
    }

    /// An id the ledger makes for a transfer nobody asked for directly.
    fn system(id: String) -> TransferId {
        debug_assert!(id.starts_with('~'));
        TransferId(id)
    }

    /// An id read back from the database, which only ever holds valid ones.
    fn stored(id: String) -> TransferId {
        TransferId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where granted credits come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum GrantSource {
    /// A subscription's allowance for a period.
    Allowance,
    /// A purchased credit package.
    Purchase,
    /// Free credits given as a promotion.
    Promotion,
    /// A manual correction by an operator.
    Adjustment,
}

impl GrantSource {
    pub const ALL: [GrantSource; 4] = [
        GrantSource::Allowance,
        GrantSource::Purchase,
        GrantSource::Promotion,
        GrantSource::Adjustment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantSource::Allowance => "allowance",
            GrantSource::Purchase => "purchase",
            GrantSource::Promotion => "promotion",
            GrantSource::Adjustment => "adjustment",
        }
    }

    pub fn parse(text: &str) -> Option<GrantSource> {
        GrantSource::ALL
            .into_iter()
            .find(|source| source.as_str() == text)
    }

    /// The platform account the credits are drawn from.
    pub fn account(self) -> AccountId {
        match self {
            GrantSource::Allowance => PlatformAccount::Allowances.id(),
            GrantSource::Purchase => PlatformAccount::Purchases.id(),
            GrantSource::Promotion => PlatformAccount::Promotions.id(),
            GrantSource::Adjustment => PlatformAccount::Adjustments.id(),
        }
    }

    /// Lower is spent first: free credits before the period's allowance,
    /// and credits the tenant paid for last.
    pub fn priority_default(self) -> i32 {
        match self {
            GrantSource::Promotion => 10,
            GrantSource::Allowance => 20,
            GrantSource::Adjustment => 30,
            GrantSource::Purchase => 40,
        }
    }
}

/// What a transfer did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TransferKind {
    /// Credits moved at once.
    Transfer,
    /// Credits granted to a tenant's wallet.
    Grant,
    /// Credits reserved by a pending hold.
    Hold,
    /// A hold captured, in full or in part; the rest released.
    Post,
    /// A hold released in full.
    Void,
    /// A hold released because nobody posted or voided it in time.
    Timeout,
    /// A grant's unspent credits moved to the expired account.
    Expire,
    /// A grant's unspent credits taken back to its source (a refund).
    Revoke,
}

impl TransferKind {
    pub const ALL: [TransferKind; 8] = [
        TransferKind::Transfer,
        TransferKind::Grant,
        TransferKind::Hold,
        TransferKind::Post,
        TransferKind::Void,
        TransferKind::Timeout,
        TransferKind::Expire,
        TransferKind::Revoke,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Transfer => "transfer",
            TransferKind::Grant => "grant",
            TransferKind::Hold => "hold",
            TransferKind::Post => "post",
            TransferKind::Void => "void",
            TransferKind::Timeout => "timeout",
            TransferKind::Expire => "expire",
            TransferKind::Revoke => "revoke",
        }
    }

    pub fn parse(text: &str) -> Option<TransferKind> {
        TransferKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// Whether the amount moves posted balances (the others move pending).
    pub fn is_posted(self) -> bool {
        matches!(
            self,
            TransferKind::Transfer
                | TransferKind::Grant
                | TransferKind::Post
                | TransferKind::Expire
                | TransferKind::Revoke
        )
    }
}

/// Where a hold stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HoldState {
    Pending,
    Posted,
    Voided,
    TimedOut,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Posted => "posted",
            HoldState::Voided => "voided",
            HoldState::TimedOut => "timed_out",
        }
    }

    pub fn parse(text: &str) -> Option<HoldState> {
        [
            HoldState::Pending,
            HoldState::Posted,
            HoldState::Voided,
            HoldState::TimedOut,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to the ledger. Each carries the id that makes it idempotent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    /// Grants credits to a tenant's wallet from the source's platform account.
    Grant {
        id: TransferId,
        account: AccountId,
        source: GrantSource,
        amount: Credits,
        expires_at: Option<Timestamp>,
        /// Spending order; `None` takes the source's default.
        priority: Option<i32>,
        memo: String,
    },
    /// Moves credits at once. A tenant wallet may be debited but not
    /// credited this way: credits reach a wallet only as grants.
    Transfer {
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Credits,
        memo: String,
    },
    /// Reserves credits until posted, voided or timed out.
    Hold {
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Credits,
        timeout_us: i64,
        memo: String,
    },
    /// Captures a pending hold: all of it when `amount` is `None`, else that
    /// much, releasing the rest.
    Post {
        id: TransferId,
        hold: TransferId,
        amount: Option<Credits>,
        memo: String,
    },
    /// Releases a pending hold in full.
    Void {
        id: TransferId,
        hold: TransferId,
        memo: String,
    },
    /// Takes `amount` of a grant's unspent credits back out of the wallet
    /// to the grant's source (a refund of what bought them). Refused when
    /// the grant has less than that free; credits a hold reserved or a
    /// charge spent stay where they are.
    Revoke {
        id: TransferId,
        account: AccountId,
        grant: TransferId,
        amount: Credits,
        memo: String,
    },
}

impl Command {
    pub fn id(&self) -> &TransferId {
        match self {
            Command::Grant { id, .. }
            | Command::Transfer { id, .. }
            | Command::Hold { id, .. }
            | Command::Post { id, .. }
            | Command::Void { id, .. }
            | Command::Revoke { id, .. } => id,
        }
    }

    fn memo(&self) -> &str {
        match self {
            Command::Grant { memo, .. }
            | Command::Transfer { memo, .. }
            | Command::Hold { memo, .. }
            | Command::Post { memo, .. }
            | Command::Void { memo, .. }
            | Command::Revoke { memo, .. } => memo,
        }
    }
}

/// A transfer as recorded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transfer {
    pub id: TransferId,
    pub kind: TransferKind,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Credits,
    /// The hold a post, void or timeout resolved.
    pub pending_id: Option<TransferId>,
    pub memo: String,
    pub created_at: Timestamp,
}

/// The answer to a command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Receipt {
    pub transfer: Transfer,
    /// True when the id had been applied before: nothing moved this time.
    pub replayed: bool,
    /// The balance of the tenant's wallet the command moved (the debit of
    /// a spend, hold, post or void; the wallet a grant funds) once it was
    /// applied; `None` for a replay, or when neither side is a wallet.
    pub wallet_balance: Option<queries::Balance>,
}

pub type CommandResult = Result<Receipt, LedgerError>;

/// Why the ledger refused a command. A refused command changed nothing.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {account} has {available} credits available, the transfer needs {amount}")]
    InsufficientCredits {
        account: AccountId,
        available: Credits,
        amount: Credits,
    },
    #[error("transfer {0} already exists with different content; choose a new id")]
    TransferIdConflict(TransferId),
    #[error(
        "{0:?} is not a transfer id: use 1 to {TRANSFER_ID_BYTES_MAX} ASCII letters, digits, '.', '_', '-' or ':'"
    )]
    InvalidTransferId(String),
    #[error("amount must be greater than zero, got {0}")]
    AmountNotPositive(Credits),
    #[error("the transfer would overflow account {0}'s balance")]
    Overflow(AccountId),
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    #[error("tenant {0} does not exist (or has no credit wallet)")]
    UnknownTenant(crate::ids::TenantId),
    #[error("a credit limit must not be negative, got {0}")]
    NegativeCreditLimit(Credits),
    #[error("a transfer needs two different accounts, got {0} twice")]
    SameAccount(AccountId),
    #[error("account {0} is a tenant wallet: credits reach it only as grants")]
    WalletCreditNotGrant(AccountId),
    #[error("account {0} is not a tenant wallet: only wallets receive grants")]
    GrantToNonWallet(AccountId),
    #[error("grant would expire at {expires_at}, which is not after now ({now})")]
    ExpiryNotInFuture {
        expires_at: Timestamp,
        now: Timestamp,
    },
    #[error(
        "hold timeout must be between 1 microsecond and {max_us} microseconds, got {timeout_us}"
    )]
    TimeoutOutOfRange { timeout_us: i64, max_us: i64 },
    #[error("memo is {0} bytes; at most {MEMO_BYTES_MAX} are kept")]
    MemoTooLong(usize),
    #[error("grant {0} does not exist in that wallet")]
    UnknownGrant(TransferId),
    #[error("grant {grant} has {free} credits free; cannot take back {amount}")]
    GrantShort {
        grant: TransferId,
        free: Credits,
        amount: Credits,
    },
    #[error("hold {0} does not exist")]
    UnknownHold(TransferId),
    #[error("hold {hold} was already {state}; it can be resolved only once")]
    HoldResolved { hold: TransferId, state: HoldState },
    #[error("hold {0} timed out before it was posted; its credits were released")]
    HoldTimedOut(TransferId),
    #[error("hold {hold} reserved {held}; cannot post {amount}")]
    PostExceedsHold {
        hold: TransferId,
        held: Credits,
        amount: Credits,
    },
    #[error("too many commands in one call: {0}, at most {COMMANDS_PER_CALL_MAX}")]
    TooManyCommands(usize),
    #[error("the ledger is shutting down; retry with the same id")]
    Unavailable,
    #[error("database error, nothing was applied; retry with the same id: {0}")]
    Database(String),
}

impl From<diesel::result::Error> for LedgerError {
    fn from(error: diesel::result::Error) -> LedgerError {
        LedgerError::Database(error.to_string())
    }
}

impl From<anyhow::Error> for LedgerError {
    fn from(error: anyhow::Error) -> LedgerError {
        LedgerError::Database(format!("{error:#}"))
    }
}

/// A handle on the ledger. Cheap to clone; all clones share one writer.
#[derive(Clone, Debug)]
pub struct Ledger {
    database: Database,
    writer: Arc<writer::Writer>,
}

impl Ledger {
    /// Starts the writer thread on its own connection to `database`.
    pub fn start(
        database: Database,
        clock: Arc<dyn Clock>,
        options: WriterOptions,
    ) -> anyhow::Result<Ledger> {
        let writer = writer::Writer::start(database.url(), clock, options)?;
        Ok(Ledger {
            database,
            writer: Arc::new(writer),
        })
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Applies commands in order; each result says what became of its
    /// command. Commands from concurrent callers share commits.
    pub async fn execute(&self, commands: Vec<Command>) -> Vec<CommandResult> {
        self.writer.execute(commands).await
    }

    /// [`Ledger::execute`] for code outside the async runtime.
    pub fn execute_blocking(&self, commands: Vec<Command>) -> Vec<CommandResult> {
        self.writer.execute_blocking(commands)
    }

    pub async fn submit(&self, command: Command) -> CommandResult {
        first(self.execute(vec![command]).await)
    }

    pub fn submit_blocking(&self, command: Command) -> CommandResult {
        first(self.execute_blocking(vec![command]))
    }

    /// Applies a command and, in the same transaction, writes `attachment`
    /// if the command is applied (not refused, not a replay).
    pub fn submit_attached_blocking(
        &self,
        command: Command,
        attachment: writer::Attachment,
    ) -> CommandResult {
        first(
            self.writer
                .execute_attached_blocking(vec![command], vec![Some(attachment)]),
        )
    }

    /// Applies commands in one batch, writing each attachment with its
    /// command if that command is applied.
    pub fn execute_attached_blocking(
        &self,
        commands: Vec<Command>,
        attachments: Vec<Option<writer::Attachment>>,
    ) -> Vec<CommandResult> {
        self.writer.execute_attached_blocking(commands, attachments)
    }

    /// Expires due grants and times out forgotten holds, up to `limit` of
    /// each; returns how many transfers that wrote. The scheduler calls this
    /// every few seconds; spending also expires a wallet's due grants first.
    pub fn expire_due_blocking(&self, limit: usize) -> Result<usize, LedgerError> {
        self.writer.expire_due_blocking(limit)
    }

    /// How many batches the writer committed, and with how many commands.
    pub fn stats(&self) -> &Stats {
        self.writer.stats()
    }

    pub async fn expire_due(&self, limit: usize) -> Result<usize, LedgerError> {
        self.writer.expire_due(limit).await
    }
}

fn first(mut results: Vec<CommandResult>) -> CommandResult {
    assert_eq!(results.len(), 1, "one command gets one result");
    results.pop().expect("length checked")
}
