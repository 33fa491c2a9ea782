//! Lead scoring: each tenant's rules give points for what a lead is (its
//! title contains "VP", its company has at least 200 people) and for what
//! it did (opened, clicked, replied), and the score is their sum.
//!
//! An engagement rule may decay: with `half_life_days = 30`, an event's
//! points halve (rounding toward zero) every 30 days after it happened, so
//! scores are whole numbers that change at known instants. A lead stores
//! its score and the next such instant; the scheduler rescores leads whose
//! instant has passed, and every change to a lead or its events rescores it
//! at once.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::leads::{self, Fields, LeadError};
use crate::db::DbConnection;
use crate::db::schema::{lead_events, leads as lead_rows, scoring_rules};
use crate::ids::TenantId;
use crate::units::Timestamp;

/// Rules one tenant may have.
pub const RULES_MAX: usize = 100;
/// Points one rule may give or take.
pub const POINTS_MAX: i64 = 1_000;
/// The longest half-life: ten years.
pub const HALF_LIFE_DAYS_MAX: u32 = 3_650;
/// Leads rescored per transaction when the rules change, so a large
/// tenant's rescoring never holds the write lock for long.
pub const RESCORE_BATCH: i64 = 500;

/// What engagement rules can count: the lead events the engagement module
/// records.
pub const EVENT_KINDS: [&str; 9] = [
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "auto_replied",
    "bounced_hard",
    "bounced_soft",
    "unsubscribed",
];

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A tenant's scoring rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule: a field condition or an engagement event, and its points.
/// A field rule has exactly one of `contains`, `equals`, `at_least`,
/// `at_most`, `present`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A lead field (`title`, `company_size`, `tags`, `custom.industry`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Case-insensitive substring of a text field, or a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Case-insensitive equality with a text field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// `company_size` at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<i64>,
    /// `company_size` at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<i64>,
    /// The field has (true) or lacks (false) a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// An engagement event kind: points for each such event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// An event's points halve every this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life_days: Option<u32>,
    pub points: i64,
}

impl Rules {
    /// Checks every rule; the error names the rule by its position.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.len() > RULES_MAX {
            return Err(format!("at most {RULES_MAX} rules"));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            rule.validate()
                .map_err(|reason| format!("rules[{index}]: {reason}"))?;
        }
        Ok(())
    }

    fn has_events(&self) -> bool {
        self.rules.iter().any(|rule| rule.event.is_some())
    }
}

impl Rule {
    fn validate(&self) -> Result<(), String> {
        if !(-POINTS_MAX..=POINTS_MAX).contains(&self.points) {
            return Err(format!(
                "points must be between -{POINTS_MAX} and {POINTS_MAX}"
            ));
        }
        let conditions = [
            self.contains.is_some(),
            self.equals.is_some(),
            self.at_least.is_some(),
            self.at_most.is_some(),
            self.present.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        match (&self.field, &self.event) {
            (Some(_), Some(_)) | (None, None) => {
                Err("give either a field with a condition or an event".to_owned())
            }
            (None, Some(event)) => {
                if !EVENT_KINDS.contains(&event.as_str()) {
                    return Err(format!(
                        "event {event:?} is not one of {}",
                        EVENT_KINDS.join(", ")
                    ));
                }
                if conditions > 0 {
                    return Err("an event rule takes no field condition".to_owned());
                }
                match self.half_life_days {
                    Some(days) if !(1..=HALF_LIFE_DAYS_MAX).contains(&days) => Err(format!(
                        "half_life_days must be between 1 and {HALF_LIFE_DAYS_MAX}"
                    )),
                    _ => Ok(()),
                }
            }
            (Some(field), None) => {
                if self.half_life_days.is_some() {
                    return Err("only event rules decay".to_owned());
                }
                if conditions != 1 {
                    return Err(
                        "a field rule has exactly one of contains, equals, at_least, at_most, present"
                            .to_owned(),
                    );
                }
                let numeric = self.at_least.is_some() || self.at_most.is_some();
                match field.as_str() {
                    "company_size" if self.contains.is_some() || self.equals.is_some() => {
                        Err("company_size takes at_least, at_most or present".to_owned())
                    }
                    "company_size" => Ok(()),
                    _ if numeric => Err(format!(
                        "{field} is text; at_least and at_most apply to company_size"
                    )),
                    "tags" if self.equals.is_some() => {
                        Err("tags takes contains (a tag) or present".to_owned())
                    }
                    "tags" => Ok(()),
                    name if leads::TEXT_FIELDS.contains(&name) => Ok(()),
                    name if name
                        .strip_prefix("custom.")
                        .is_some_and(|key| !key.is_empty()) =>
                    {
                        Ok(())
                    }
                    _ => Err(format!(
                        "field {field:?} is not a lead field: use one of {}, company_size, tags or custom.<name>",
                        leads::TEXT_FIELDS.join(", ")
                    )),
                }
            }
        }
    }

    fn matches(&self, fields: &Fields) -> bool {
        let Some(field) = &self.field else {
            return false;
        };
        if field == "company_size" {
            return match (fields.company_size, self.present) {
                (size, Some(present)) => size.is_some() == present,
                (None, None) => false,
                (Some(size), None) => {
                    self.at_least.is_none_or(|min| size >= min)
                        && self.at_most.is_none_or(|max| size <= max)
                }
            };
        }
        if field == "tags" {
            return match (&self.contains, self.present) {
                (_, Some(present)) => fields.tags.is_empty() != present,
                (Some(tag), None) => fields
                    .tags
                    .iter()
                    .any(|held| held.eq_ignore_ascii_case(tag)),
                (None, None) => false,
            };
        }
        let value = match field.strip_prefix("custom.") {
            Some(key) => fields.custom_fields.get(key).map(String::as_str),
            None => fields.text(field),
        };
        match (value, self.present) {
            (value, Some(present)) => value.is_some() == present,
            (None, None) => false,
            (Some(value), None) => {
                let value = value.to_lowercase();
                match (&self.contains, &self.equals) {
                    (Some(part), _) => value.contains(&part.to_lowercase()),
                    (None, Some(whole)) => value == whole.to_lowercase(),
                    (None, None) => false,
                }
            }
        }
    }
}

/// A lead's score now, and when the decay of an event's points next
/// changes it.
pub fn compute(
    rules: &Rules,
    fields: &Fields,
    events: &[(String, Timestamp)],
    now: Timestamp,
) -> (i64, Option<Timestamp>) {
    let mut score: i64 = 0;
    let mut changes_at: Option<i64> = None;
    for rule in &rules.rules {
        match &rule.event {
            None => {
                if rule.matches(fields) {
                    score += rule.points;
                }
            }
            Some(kind) => {
                for (_, at) in events.iter().filter(|(held, _)| held == kind) {
                    let Some(days) = rule.half_life_days else {
                        score += rule.points;
                        continue;
                    };
                    let half_life = i64::from(days) * MICROS_PER_DAY;
                    let age = (now.micros() - at.micros()).max(0);
                    let halvings = age / half_life;
                    let points = match halvings {
                        0..=62 => rule.points / (1_i64 << halvings),
                        _ => 0,
                    };
                    score += points;
                    if points != 0 {
                        let next = (halvings + 1)
                            .checked_mul(half_life)
                            .and_then(|span| at.micros().checked_add(span));
                        if let Some(next) = next {
                            changes_at = Some(changes_at.map_or(next, |held| held.min(next)));
                        }
                    }
                }
            }
        }
    }
    (score, changes_at.map(Timestamp::from_micros))
}

/// The tenant's rules; none until it sets some.
pub fn rules_of(conn: &mut DbConnection, tenant: TenantId) -> Result<Rules, DieselError> {
    let stored: Option<String> = scoring_rules::table
        .filter(scoring_rules::tenant_id.eq(tenant.0))
        .select(scoring_rules::rules)
        .first(conn)
        .optional()?;
    // Stored by `set_rules` after validation, so it parses.
    Ok(stored
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}

/// Replaces the tenant's rules (already validated). Rescore its leads with
/// [`rescore_batch`] afterwards.
pub fn set_rules(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &Rules,
    now: Timestamp,
) -> Result<(), DieselError> {
    let text = serde_json::to_string(rules).expect("rules serialise");
    diesel::delete(scoring_rules::table.filter(scoring_rules::tenant_id.eq(tenant.0)))
        .execute(conn)?;
    diesel::insert_into(scoring_rules::table)
        .values((
            scoring_rules::tenant_id.eq(tenant.0),
            scoring_rules::rules.eq(text),
            scoring_rules::updated_at.eq(now.micros()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Recomputes one lead's score under `rules`.
pub fn refresh(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &Rules,
    lead: i64,
    now: Timestamp,
) -> Result<i64, LeadError> {
    let fields = leads::get(conn, tenant, lead)?.fields;
    let events: Vec<(String, Timestamp)> = match rules.has_events() {
        false => Vec::new(),
        true => lead_events::table
            .filter(lead_events::lead_id.eq(lead))
            .select((lead_events::kind, lead_events::occurred_at))
            .load::<(String, i64)>(conn)?
            .into_iter()
            .map(|(kind, at)| (kind, Timestamp::from_micros(at)))
            .collect(),
    };
    let (score, changes_at) = compute(rules, &fields, &events, now);
    diesel::update(lead_rows::table.filter(lead_rows::id.eq(lead)))
        .set((
            lead_rows::score.eq(score),
            lead_rows::score_changes_at.eq(changes_at.map(Timestamp::micros)),
        ))
        .execute(conn)?;
    Ok(score)
}

/// Rescores up to [`RESCORE_BATCH`] of the tenant's leads with ids above
/// `after`; returns the last id rescored and how many were, or none when
/// there were no more.
pub fn rescore_batch(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &Rules,
    after: i64,
    now: Timestamp,
) -> Result<Option<(i64, usize)>, LeadError> {
    let ids: Vec<i64> = lead_rows::table
        .filter(lead_rows::tenant_id.eq(tenant.0))
        .filter(lead_rows::id.gt(after))
        .order(lead_rows::id.asc())
        .limit(RESCORE_BATCH)
        .select(lead_rows::id)
        .load(conn)?;
    for id in &ids {
        refresh(conn, tenant, rules, *id, now)?;
    }
    Ok(ids.last().map(|last| (*last, ids.len())))
}

/// Rescores up to `limit` leads whose decay changed their score by `now`;
/// returns how many.
pub fn rescore_decayed(
    conn: &mut DbConnection,
    now: Timestamp,
    limit: i64,
) -> Result<usize, LeadError> {
    let due: Vec<(i64, i64)> = lead_rows::table
        .filter(lead_rows::score_changes_at.le(now.micros()))
        .order(lead_rows::score_changes_at.asc())
        .limit(limit)
        .select((lead_rows::tenant_id, lead_rows::id))
        .load(conn)?;
    let mut rules: Option<(i64, Rules)> = None;
    for (tenant, lead) in &due {
        if rules.as_ref().is_none_or(|(held, _)| held != tenant) {
            rules = Some((*tenant, rules_of(conn, TenantId(*tenant))?));
        }
        let (_, tenant_rules) = rules.as_ref().expect("just loaded");
        refresh(conn, TenantId(*tenant), tenant_rules, *lead, now)?;
    }
    Ok(due.len())
}
