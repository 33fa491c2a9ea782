//! Tasks: work for a person, such as a call a sequence step asks for or a
//! follow-up a deal's stage rule creates. Open until done or cancelled.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::db::DbConnection;
use crate::db::schema::tasks;
use crate::ids::TenantId;
use crate::units::Timestamp;

/// Rows in one page of tasks.
pub const PAGE_LIMIT_MAX: i64 = 500;
/// Characters in a title and in notes.
pub const TITLE_CHARS_MAX: usize = 500;
pub const NOTES_CHARS_MAX: usize = 10_000;
/// Open tasks one tenant may have: a bound on what sequences and rules can
/// pile up.
pub const OPEN_TASKS_MAX: i64 = 1_000_000;

/// The kinds of task.
pub const KINDS: [&str; 4] = ["call", "email", "linkedin", "todo"];

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} not found")]
    NotFound(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("this tenant has {OPEN_TASKS_MAX} open tasks, the most it may; finish some first")]
    TooMany,
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// A task to create.
#[derive(Clone, Debug, Default)]
pub struct NewTask {
    pub title: String,
    /// One of [`KINDS`].
    pub kind: String,
    pub lead: Option<i64>,
    /// The sequence step that asked for it.
    pub step_run: Option<i64>,
    /// The deal whose stage rule created it.
    pub deal: Option<i64>,
    pub due_at: Option<Timestamp>,
    pub notes: Option<String>,
}

impl NewTask {
    pub fn validate(&self) -> Result<(), TaskError> {
        let title = self.title.trim();
        if title.is_empty() || title.chars().count() > TITLE_CHARS_MAX {
            return Err(TaskError::Invalid(format!(
                "title: 1 to {TITLE_CHARS_MAX} characters"
            )));
        }
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(TaskError::Invalid(format!(
                "kind: one of {}",
                KINDS.join(", ")
            )));
        }
        if self
            .notes
            .as_ref()
            .is_some_and(|notes| notes.chars().count() > NOTES_CHARS_MAX)
        {
            return Err(TaskError::Invalid(format!(
                "notes: at most {NOTES_CHARS_MAX} characters"
            )));
        }
        Ok(())
    }
}

/// A stored task.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub tenant_id: i64,
    pub title: String,
    pub kind: String,
    pub lead_id: Option<i64>,
    pub step_run_id: Option<i64>,
    pub due_at: Option<i64>,
    pub status: String,
    pub notes: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub deal_id: Option<i64>,
}

/// Creates a task. Text longer than the limits is cut, since a template or
/// rule produced it.
pub fn create(
    conn: &mut DbConnection,
    tenant: TenantId,
    task: &NewTask,
    now: Timestamp,
) -> Result<Task, TaskError> {
    let open: i64 = tasks::table
        .filter(tasks::tenant_id.eq(tenant.0))
        .filter(tasks::status.eq("open"))
        .count()
        .get_result(conn)?;
    if open >= OPEN_TASKS_MAX {
        return Err(TaskError::TooMany);
    }
    let title: String = task.title.trim().chars().take(TITLE_CHARS_MAX).collect();
    let notes = task
        .notes
        .as_ref()
        .map(|notes| notes.chars().take(NOTES_CHARS_MAX).collect::<String>());
    let id = diesel::insert_into(tasks::table)
        .values((
            tasks::tenant_id.eq(tenant.0),
            tasks::title.eq(if title.is_empty() {
                "Task".to_owned()
            } else {
                title
            }),
            tasks::kind.eq(&task.kind),
            tasks::lead_id.eq(task.lead),
            tasks::step_run_id.eq(task.step_run),
            tasks::deal_id.eq(task.deal),
            tasks::due_at.eq(task.due_at.map(Timestamp::micros)),
            tasks::status.eq("open"),
            tasks::notes.eq(notes),
            tasks::created_at.eq(now.micros()),
        ))
        .returning(tasks::id)
        .get_result::<i64>(conn)?;
    get(conn, tenant, id)
}

pub fn get(conn: &mut DbConnection, tenant: TenantId, id: i64) -> Result<Task, TaskError> {
    tasks::table
        .filter(tasks::tenant_id.eq(tenant.0))
        .filter(tasks::id.eq(id))
        .select(Task::as_select())
        .first(conn)
        .optional()?
        .ok_or(TaskError::NotFound(id))
}

/// Which tasks a listing shows.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub lead: Option<i64>,
}

/// A page of the tenant's tasks, oldest first, after `after`.
pub fn list(
    conn: &mut DbConnection,
    tenant: TenantId,
    filter: &Filter,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Task>, Option<i64>), TaskError> {
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let mut query = tasks::table
        .filter(tasks::tenant_id.eq(tenant.0))
        .order(tasks::id.asc())
        .limit(limit + 1)
        .select(Task::as_select())
        .into_boxed();
    if let Some(status) = &filter.status {
        query = query.filter(tasks::status.eq(status.clone()));
    }
    if let Some(lead) = filter.lead {
        query = query.filter(tasks::lead_id.eq(lead));
    }
    if let Some(after) = after {
        query = query.filter(tasks::id.gt(after));
    }
    let mut rows: Vec<Task> = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match more {
        true => rows.last().map(|task| task.id),
        false => None,
    };
    Ok((rows, next))
}

/// Marks a task done, cancelled or open again.
pub fn set_status(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    status: &str,
    now: Timestamp,
) -> Result<Task, TaskError> {
    if !["open", "done", "cancelled"].contains(&status) {
        return Err(TaskError::Invalid("status: open, done or cancelled".into()));
    }
    get(conn, tenant, id)?;
    diesel::update(tasks::table.filter(tasks::id.eq(id)))
        .set((
            tasks::status.eq(status),
            tasks::completed_at.eq((status != "open").then_some(now.micros())),
        ))
        .execute(conn)?;
    get(conn, tenant, id)
}
