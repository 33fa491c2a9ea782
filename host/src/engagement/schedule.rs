//! When a sequence step may go out: inside a sending window (such as 09:00
//! to 17:00, Monday to Friday) in the lead's own time zone, and after a
//! wait counted in business days (the window's days). Pure functions of
//! instants and time zones; daylight-saving changes are handled by
//! chrono-tz (a window opening in a skipped hour opens at the first
//! instant after it).

use chrono::{
    Datelike as _, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone as _, Timelike as _, Utc,
};
use chrono_tz::Tz;

use crate::units::Timestamp;

/// Minutes in a day.
const DAY_MINUTES: u32 = 24 * 60;

/// The days and hours a sequence sends in, in the lead's local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Minutes after local midnight: a send starts at or after this...
    pub start_minute: u32,
    /// ...and before this.
    pub end_minute: u32,
    /// Monday = 1, Tuesday = 2, ... Sunday = 64.
    pub days: u8,
}

impl Window {
    /// 09:00 to 17:00, Monday to Friday.
    pub const OFFICE_HOURS: Window = Window {
        start_minute: 9 * 60,
        end_minute: 17 * 60,
        days: 0b001_1111,
    };

    pub fn validate(&self) -> Result<(), String> {
        if self.end_minute > DAY_MINUTES || self.start_minute >= self.end_minute {
            return Err(
                "the window must start before it ends, within one day (00:00 to 24:00)".into(),
            );
        }
        if self.days == 0 || self.days > 0b111_1111 {
            return Err("the window needs at least one day of the week".into());
        }
        Ok(())
    }

    fn is_day(&self, date: NaiveDate) -> bool {
        self.days & (1 << date.weekday().num_days_from_monday()) != 0
    }

    /// The first instant at or after `at` inside the window, in `zone`.
    pub fn next_open(&self, zone: Tz, at: Timestamp) -> Timestamp {
        let local = at.to_chrono().with_timezone(&zone).naive_local();
        // Within eight days every day of the week has come round once.
        for offset in 0..8 {
            let date = local.date() + Days::new(offset);
            if !self.is_day(date) {
                continue;
            }
            let opens = instant(zone, date, self.start_minute);
            let closes = instant(zone, date, self.end_minute);
            if offset > 0 || at < opens {
                return opens;
            }
            if at < closes {
                return at;
            }
        }
        unreachable!("a validated window has a day every week")
    }

    /// `at` plus `days` business days (the window's days) at the same
    /// local time, in `zone`; `at` itself for none.
    pub fn add_business_days(&self, zone: Tz, at: Timestamp, days: u32) -> Timestamp {
        if days == 0 {
            return at;
        }
        let local = at.to_chrono().with_timezone(&zone).naive_local();
        let mut date = local.date();
        let mut counted = 0;
        while counted < days {
            date = date + Days::new(1);
            if self.is_day(date) {
                counted += 1;
            }
        }
        let minute = local.time().num_seconds_from_midnight() / 60;
        let seconds = local.time().num_seconds_from_midnight() % 60;
        instant(zone, date, minute).saturating_add_micros(i64::from(seconds) * 1_000_000)
    }
}

/// Local `date` at `minute` after midnight in `zone`, as an instant. A
/// time skipped by a daylight-saving change is moved an hour later (the
/// first instant after the gap); an ambiguous one is its earlier instant.
fn instant(zone: Tz, date: NaiveDate, minute: u32) -> Timestamp {
    let midnight = NaiveDateTime::new(date, NaiveTime::MIN);
    let local = midnight + chrono::Duration::minutes(i64::from(minute));
    let resolved = zone
        .from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local));
    Timestamp::from_chrono(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn tokyo() -> Tz {
        "Asia/Tokyo".parse().unwrap()
    }

    #[test]
    fn a_send_waits_for_the_window_in_the_leads_time_zone() {
        let window = Window::OFFICE_HOURS;
        let check = |now: &str, expect: &str| {
            assert_eq!(window.next_open(tokyo(), at(now)), at(expect), "{now}");
        };
        // Tuesday 10:00 in Tokyo (01:00 UTC): open.
        check("2026-01-06T01:00:00Z", "2026-01-06T01:00:00Z");
        // Tuesday 08:00 in Tokyo: at 09:00.
        check("2026-01-05T23:00:00Z", "2026-01-06T00:00:00Z");
        // Tuesday 17:00 in Tokyo (08:00 UTC), closed: Wednesday 09:00.
        check("2026-01-06T08:00:00Z", "2026-01-07T00:00:00Z");
        // Friday 18:00 in Tokyo: Monday 09:00.
        check("2026-01-09T09:00:00Z", "2026-01-12T00:00:00Z");
        // Saturday noon in UTC is Saturday evening in Tokyo: Monday 09:00.
        check("2026-01-10T12:00:00Z", "2026-01-12T00:00:00Z");
        // Sunday 20:00 in UTC is already Monday 05:00 in Tokyo: 09:00 then.
        check("2026-01-11T20:00:00Z", "2026-01-12T00:00:00Z");
    }

    #[test]
    fn business_days_skip_the_weekend_and_keep_the_time() {
        let window = Window::OFFICE_HOURS;
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // Thursday 10:30 in Paris + 2 business days = Monday 10:30.
        assert_eq!(
            window.add_business_days(paris, at("2026-01-08T09:30:00Z"), 2),
            at("2026-01-12T09:30:00Z")
        );
        // Across the change to summer time, 10:30 stays 10:30 local.
        assert_eq!(
            window.add_business_days(paris, at("2026-03-27T09:30:00Z"), 1),
            at("2026-03-30T08:30:00Z")
        );
        assert_eq!(
            window.add_business_days(paris, at("2026-01-08T09:30:00Z"), 0),
            at("2026-01-08T09:30:00Z")
        );
    }

    #[test]
    fn a_window_opening_in_a_skipped_hour_opens_after_it() {
        // New York skips 02:00-03:00 on 2026-03-08, a Sunday.
        let new_york: Tz = "America/New_York".parse().unwrap();
        let window = Window {
            start_minute: 2 * 60 + 30,
            end_minute: 4 * 60,
            days: 0b111_1111,
        };
        assert_eq!(
            window.next_open(new_york, at("2026-03-08T06:00:00Z")),
            at("2026-03-08T07:30:00Z")
        );
    }

    #[test]
    fn windows_are_checked() {
        let bad = |start, end, days| {
            Window {
                start_minute: start,
                end_minute: end,
                days,
            }
            .validate()
            .is_err()
        };
        assert!(bad(600, 600, 1));
        assert!(bad(600, 1441, 1));
        assert!(bad(600, 700, 0));
        assert!(!bad(0, 1440, 127));
    }
}
