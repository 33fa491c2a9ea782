use super::*;

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn day(timestamp: Timestamp) -> String {
    timestamp.to_chrono().format("%Y-%m-%d %H:%M").to_string()
}

fn credits(whole: i64) -> Credits {
    Credits::from_whole(whole).unwrap()
}

#[test]
fn monthly_periods_keep_their_anchor_day_and_clamp_to_short_months() {
    let anchor = at("2026-01-31T09:30:00Z");
    let starts: Vec<String> = (0..14)
        .map(|index| day(period(anchor, Interval::Month, index).0))
        .collect();
    assert_eq!(
        starts,
        [
            "2026-01-31 09:30",
            "2026-02-28 09:30",
            "2026-03-31 09:30",
            "2026-04-30 09:30",
            "2026-05-31 09:30",
            "2026-06-30 09:30",
            "2026-07-31 09:30",
            "2026-08-31 09:30",
            "2026-09-30 09:30",
            "2026-10-31 09:30",
            "2026-11-30 09:30",
            "2026-12-31 09:30",
            "2027-01-31 09:30",
            "2027-02-28 09:30",
        ]
    );
    // Each period ends where the next begins: no gap, no overlap.
    for index in 0..13 {
        assert_eq!(
            period(anchor, Interval::Month, index).1,
            period(anchor, Interval::Month, index + 1).0
        );
    }
    // A leap year's February has its 29th.
    let leap = at("2028-01-31T00:00:00Z");
    assert_eq!(day(period(leap, Interval::Month, 1).0), "2028-02-29 00:00");
    let yearly = at("2028-02-29T00:00:00Z");
    assert_eq!(day(period(yearly, Interval::Year, 1).0), "2029-02-28 00:00");
    assert_eq!(day(period(yearly, Interval::Year, 4).0), "2032-02-29 00:00");
}

#[test]
fn a_time_falls_in_the_period_that_contains_it() {
    let anchor = at("2026-01-15T00:00:00Z");
    assert_eq!(period_index(anchor, Interval::Month, anchor), 0);
    assert_eq!(
        period_index(anchor, Interval::Month, at("2026-02-14T23:59:59Z")),
        0
    );
    assert_eq!(
        period_index(anchor, Interval::Month, at("2026-02-15T00:00:00Z")),
        1
    );
    assert_eq!(
        period_index(anchor, Interval::Month, at("2027-01-20T00:00:00Z")),
        12
    );
    assert_eq!(
        period_index(anchor, Interval::Month, at("2025-12-01T00:00:00Z")),
        0
    );
}

#[test]
fn proration_is_by_the_microsecond_and_rounds_half_away_from_zero() {
    // Stripe's example: from $10 to $20 half-way through the period.
    let (start, end) = (at("2026-04-01T00:00:00Z"), at("2026-05-01T00:00:00Z"));
    let half = at("2026-04-16T00:00:00Z");
    assert_eq!(
        proration(1_000, 2_000, start, end, half),
        Proration {
            credit_minor: 500,
            charge_minor: 1_000,
            due_minor: 500
        }
    );
    // Starter to Professional ($49 → $149) with 10 of 30 days left: a
    // third of each, $16.333… and $49.666…, rounded to the cent.
    let ten_days_left = at("2026-04-21T00:00:00Z");
    assert_eq!(
        proration(4_900, 14_900, start, end, ten_days_left),
        Proration {
            credit_minor: 1_633,
            charge_minor: 4_967,
            due_minor: 3_334
        }
    );
    // Exactly half a cent rounds away from zero.
    let (s, e) = (Timestamp::from_micros(0), Timestamp::from_micros(2));
    assert_eq!(prorate(1, s, e, Timestamp::from_micros(1)), 1);
    assert_eq!(prorate(-1, s, e, Timestamp::from_micros(1)), -1);
    assert_eq!(prorate(3, s, e, Timestamp::from_micros(1)), 2);
    // At the very start the whole price, at the end nothing, and times
    // outside the period count as its edges.
    assert_eq!(prorate(4_900, start, end, start), 4_900);
    assert_eq!(prorate(4_900, start, end, end), 0);
    assert_eq!(
        prorate(4_900, start, end, at("2026-03-01T00:00:00Z")),
        4_900
    );
    assert_eq!(prorate(4_900, start, end, at("2026-06-01T00:00:00Z")), 0);
    assert_eq!(prorate(4_900, end, start, half), 0);
    // Large prices stay exact: a $1,000,000.00 annual plan, one second in.
    let (year_start, year_end) = (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
    assert_eq!(
        prorate(
            100_000_000,
            year_start,
            year_end,
            at("2026-01-01T00:00:01Z")
        ),
        99_999_997
    );
}

#[test]
fn carryover_keeps_at_most_the_policys_credits_for_its_periods() {
    let policy = Carryover {
        credits_max: credits(500),
        expires_after_periods: 1,
    };
    assert_eq!(carryover(credits(200), &policy), credits(200));
    assert_eq!(carryover(credits(800), &policy), credits(500));
    assert_eq!(carryover(Credits::ZERO, &policy), Credits::ZERO);
    let none = Carryover {
        credits_max: Credits::ZERO,
        expires_after_periods: 1,
    };
    assert_eq!(carryover(credits(800), &none), Credits::ZERO);

    let anchor = at("2026-01-31T00:00:00Z");
    let first_end = period(anchor, Interval::Month, 0).1;
    // Carried at the end of January, it lives through February.
    assert_eq!(
        day(carryover_expiry(
            anchor,
            Interval::Month,
            first_end,
            &policy
        )),
        "2026-03-31 00:00"
    );
    let two = Carryover {
        expires_after_periods: 2,
        ..policy
    };
    assert_eq!(
        day(carryover_expiry(anchor, Interval::Month, first_end, &two)),
        "2026-04-30 00:00"
    );
}
