//! Usage rollups: settled calls summed by tenant, day, plugin and function,
//! platform-wide by day, plugin and function, and by tenant and month.
//! `record` adds a batch of completed calls to them in the transaction that
//! completes the calls, so a call is in the reports as soon as its
//! settlement commits, and is counted once.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::upsert::excluded;

use crate::db::schema::{usage_daily, usage_monthly, usage_platform_daily};
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::metering::UsageRow;
use crate::units::{Credits, Timestamp};

/// The sums one rollup row keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub calls: i64,
    pub failed: i64,
    pub units: i64,
    /// Millionths of a credit.
    pub credits: i64,
    pub fuel: i64,
    pub duration_us: i64,
}

impl Sums {
    fn add(&mut self, record: &UsageRow) {
        self.calls += 1;
        self.failed += i64::from(record.outcome != "ok");
        self.units += record.units.max(0);
        self.credits += record.credits;
        self.fuel += record.fuel.max(0);
        self.duration_us += record.duration_us.max(0);
    }

    fn merge(&mut self, other: &Sums) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.units += other.units;
        self.credits += other.credits;
        self.fuel += other.fuel;
        self.duration_us += other.duration_us;
    }

    pub fn credits(&self) -> Credits {
        Credits::from_micros(self.credits)
    }
}

/// `YYYY-MM-DD` (UTC) of a time.
pub fn day_of(micros: i64) -> String {
    // A date's own display, not `format("%Y-%m-%d")`, which parses its
    // pattern at every call (2% of the ledger writer's CPU, once a record).
    Timestamp::from_micros(micros)
        .to_chrono()
        .date_naive()
        .to_string()
}

/// `YYYY-MM` (UTC) of a time.
pub fn month_of(micros: i64) -> String {
    use chrono::Datelike as _;
    let at = Timestamp::from_micros(micros).to_chrono();
    format!("{:04}-{:02}", at.year(), at.month())
}

#[derive(Insertable)]
#[diesel(table_name = usage_daily, treat_none_as_default_value = false)]
struct DailyRow<'a> {
    tenant_id: i64,
    day: &'a str,
    plugin: &'a str,
    function: &'a str,
    calls: i64,
    failed: i64,
    units: i64,
    credits: i64,
    fuel: i64,
    duration_us: i64,
}

#[derive(Insertable)]
#[diesel(table_name = usage_platform_daily, treat_none_as_default_value = false)]
struct PlatformRow<'a> {
    day: &'a str,
    plugin: &'a str,
    function: &'a str,
    calls: i64,
    failed: i64,
    units: i64,
    credits: i64,
    fuel: i64,
    duration_us: i64,
}

#[derive(Insertable)]
#[diesel(table_name = usage_monthly, treat_none_as_default_value = false)]
struct MonthlyRow<'a> {
    tenant_id: i64,
    month: &'a str,
    calls: i64,
    credits: i64,
}

/// Adds completed calls to the rollups: one upsert per rollup row the
/// batch touches, however many calls it sums.
pub fn record(conn: &mut DbConnection, records: &[&UsageRow]) -> QueryResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut daily: BTreeMap<(i64, String, &str, &str), Sums> = BTreeMap::new();
    for record in records {
        daily
            .entry((
                record.tenant_id,
                day_of(record.created_at),
                record.plugin.as_str(),
                record.function.as_str(),
            ))
            .or_default()
            .add(record);
    }
    let mut platform: BTreeMap<(&str, &str, &str), Sums> = BTreeMap::new();
    let mut monthly: BTreeMap<(i64, &str), Sums> = BTreeMap::new();
    for ((tenant, day, plugin, function), sums) in &daily {
        platform
            .entry((day.as_str(), plugin, function))
            .or_default()
            .merge(sums);
        monthly.entry((*tenant, &day[..7])).or_default().merge(sums);
    }

    let rows: Vec<DailyRow> = daily
        .iter()
        .map(|((tenant_id, day, plugin, function), s)| DailyRow {
            tenant_id: *tenant_id,
            day,
            plugin,
            function,
            calls: s.calls,
            failed: s.failed,
            units: s.units,
            credits: s.credits,
            fuel: s.fuel,
            duration_us: s.duration_us,
        })
        .collect();
    use usage_daily::dsl as d;
    db::update_all!(
        conn,
        usage_daily::table,
        &rows,
        (d::tenant_id, d::day, d::plugin, d::function),
        (
            d::calls.eq(d::calls + excluded(d::calls)),
            d::failed.eq(d::failed + excluded(d::failed)),
            d::units.eq(d::units + excluded(d::units)),
            d::credits.eq(d::credits + excluded(d::credits)),
            d::fuel.eq(d::fuel + excluded(d::fuel)),
            d::duration_us.eq(d::duration_us + excluded(d::duration_us)),
        )
    );
    let rows: Vec<PlatformRow> = platform
        .iter()
        .map(|((day, plugin, function), s)| PlatformRow {
            day,
            plugin,
            function,
            calls: s.calls,
            failed: s.failed,
            units: s.units,
            credits: s.credits,
            fuel: s.fuel,
            duration_us: s.duration_us,
        })
        .collect();
    use usage_platform_daily::dsl as p;
    db::update_all!(
        conn,
        usage_platform_daily::table,
        &rows,
        (p::day, p::plugin, p::function),
        (
            p::calls.eq(p::calls + excluded(p::calls)),
            p::failed.eq(p::failed + excluded(p::failed)),
            p::units.eq(p::units + excluded(p::units)),
            p::credits.eq(p::credits + excluded(p::credits)),
            p::fuel.eq(p::fuel + excluded(p::fuel)),
            p::duration_us.eq(p::duration_us + excluded(p::duration_us)),
        )
    );
    let rows: Vec<MonthlyRow> = monthly
        .iter()
        .map(|((tenant_id, month), s)| MonthlyRow {
            tenant_id: *tenant_id,
            month,
            calls: s.calls,
            credits: s.credits,
        })
        .collect();
    use usage_monthly::dsl as m;
    db::update_all!(
        conn,
        usage_monthly::table,
        &rows,
        (m::tenant_id, m::month),
        (
            m::calls.eq(m::calls + excluded(m::calls)),
            m::credits.eq(m::credits + excluded(m::credits)),
        )
    );
    Ok(())
}

/// One row of a usage report: a day (or the whole range), a plugin and a
/// function, and what was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageLine {
    pub day: String,
    pub plugin: String,
    pub function: String,
    pub sums: Sums,
}

type LineTuple = (String, String, String, i64, i64, i64, i64, i64, i64);

fn line(
    (day, plugin, function, calls, failed, units, credits, fuel, duration_us): LineTuple,
) -> UsageLine {
    UsageLine {
        day,
        plugin,
        function,
        sums: Sums {
            calls,
            failed,
            units,
            credits,
            fuel,
            duration_us,
        },
    }
}

/// Days are `YYYY-MM-DD`; `from` is included, `to` is not.
pub fn tenant_daily(
    conn: &mut DbConnection,
    tenant: TenantId,
    from: &str,
    to: &str,
) -> QueryResult<Vec<UsageLine>> {
    use usage_daily::dsl as d;
    let rows: Vec<LineTuple> = d::usage_daily
        .filter(d::tenant_id.eq(tenant.0))
        .filter(d::day.ge(from))
        .filter(d::day.lt(to))
        .order((d::day, d::plugin, d::function))
        .select((
            d::day,
            d::plugin,
            d::function,
            d::calls,
            d::failed,
            d::units,
            d::credits,
            d::fuel,
            d::duration_us,
        ))
        .load(conn)?;
    Ok(rows.into_iter().map(line).collect())
}

/// The platform's use, every tenant's summed.
pub fn platform_daily(
    conn: &mut DbConnection,
    from: &str,
    to: &str,
) -> QueryResult<Vec<UsageLine>> {
    use usage_platform_daily::dsl as p;
    let rows: Vec<LineTuple> = p::usage_platform_daily
        .filter(p::day.ge(from))
        .filter(p::day.lt(to))
        .order((p::day, p::plugin, p::function))
        .select((
            p::day,
            p::plugin,
            p::function,
            p::calls,
            p::failed,
            p::units,
            p::credits,
            p::fuel,
            p::duration_us,
        ))
        .load(conn)?;
    Ok(rows.into_iter().map(line).collect())
}

/// Lines summed over their days, by plugin and function.
pub fn by_function(lines: &[UsageLine]) -> Vec<UsageLine> {
    let mut sums: BTreeMap<(&str, &str), Sums> = BTreeMap::new();
    for line in lines {
        sums.entry((&line.plugin, &line.function))
            .or_default()
            .merge(&line.sums);
    }
    sums.into_iter()
        .map(|((plugin, function), sums)| UsageLine {
            day: String::new(),
            plugin: plugin.to_owned(),
            function: function.to_owned(),
            sums,
        })
        .collect()
}

/// Credits each tenant used in a month.
pub fn monthly_credits(conn: &mut DbConnection, month: &str) -> QueryResult<BTreeMap<i64, i64>> {
    use usage_monthly::dsl as m;
    let rows: Vec<(i64, i64)> = m::usage_monthly
        .filter(m::month.eq(month))
        .select((m::tenant_id, m::credits))
        .load(conn)?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::{day_of, month_of};
    use crate::units::Timestamp;

    #[test]
    fn days_and_months_are_zero_padded_utc() {
        // 2026-03-05T23:59:59.999999Z, and the microsecond after it.
        let last = chrono::DateTime::parse_from_rfc3339("2026-03-05T23:59:59.999999Z")
            .expect("a valid time")
            .timestamp_micros();
        assert_eq!(day_of(last), "2026-03-05");
        assert_eq!(day_of(last + 1), "2026-03-06");
        assert_eq!(month_of(last), "2026-03");
        let short_year = Timestamp::from_micros(
            chrono::DateTime::parse_from_rfc3339("0999-12-31T23:59:59Z")
                .expect("a valid time")
                .timestamp_micros(),
        );
        assert_eq!(day_of(short_year.micros()), "0999-12-31");
        assert_eq!(month_of(short_year.micros()), "0999-12");
        assert_eq!(crate::metering::period_of(short_year), "0999-12");
    }
}
