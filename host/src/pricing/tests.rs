use super::*;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn tier(up_to: Option<u64>, per_unit: &str, flat: &str) -> Tier {
    Tier {
        up_to,
        per_unit: d(per_unit),
        flat: d(flat),
    }
}

fn price(units: ChargeModel) -> Price {
    Price {
        plugin: "http-leads".into(),
        function: "search".into(),
        tenant: None,
        effective_from: Timestamp::from_micros(0),
        per_call: Decimal::ZERO,
        units,
        free_units: BTreeMap::new(),
        per_million_fuel: Decimal::ZERO,
        charge_failed: false,
    }
}

fn usage(period_units: u64, units: u64) -> Usage<'static> {
    Usage {
        plan: None,
        period_units,
        units,
        fuel: 0,
    }
}

fn credits(text: &str) -> Credits {
    Credits::parse(text).unwrap()
}

fn volume() -> ChargeModel {
    ChargeModel::Volume {
        tiers: vec![
            tier(Some(10_000), "0.05", "0"),
            tier(Some(50_000), "0.04", "0"),
            tier(Some(100_000), "0.03", "0"),
            tier(None, "0.02", "0"),
        ],
    }
}

fn graduated() -> ChargeModel {
    ChargeModel::Graduated {
        tiers: vec![tier(Some(100), "1", "10"), tier(None, "0.5", "5")],
    }
}

#[test]
fn lagos_examples_price_as_lago_prices_them() {
    // Standard: 1,000 units at 0.05 = 50.
    let standard = ChargeModel::Standard {
        per_unit: d("0.05"),
    };
    assert_eq!(standard.period_amount(1_000), d("50"));
    // Package of 100 units at 5, the first 100 free: 201 units = 10.
    let package = ChargeModel::Package {
        size: 100,
        price: d("5"),
        free_units: 100,
    };
    for (units, amount) in [(0, "0"), (100, "0"), (101, "5"), (200, "5"), (201, "10")] {
        assert_eq!(package.period_amount(units), d(amount), "{units} units");
    }
    // Volume: 65,000 units land in the 50,001–100,000 tier, every unit at
    // its price.
    assert_eq!(volume().period_amount(65_000), d("1950"));
    assert_eq!(volume().period_amount(50_000), d("2000"));
    assert_eq!(volume().period_amount(50_001), d("1500.03"));
    assert_eq!(volume().period_amount(0), d("0"));
    // Graduated: each tier's units at its price, plus the flat fee of
    // each tier reached: 100 x 1 + 10, then 50 x 0.5 + 5.
    assert_eq!(graduated().period_amount(150), d("140"));
    assert_eq!(graduated().period_amount(100), d("110"));
    assert_eq!(graduated().period_amount(1), d("11"));
    assert_eq!(graduated().period_amount(0), d("0"));
}

#[test]
fn a_call_is_charged_what_it_adds_to_the_period() {
    let mut search = price(ChargeModel::Standard {
        per_unit: d("0.05"),
    });
    search.per_call = d("0.1");
    assert_eq!(search.charge(usage(0, 20)), credits("1.1"));
    assert_eq!(search.charge(usage(0, 0)), credits("0.1"));

    // A call that crosses a graduated tier pays each side at its price,
    // and the new tier's flat fee: 110 units cost 120, 90 cost 100.
    let tiers = price(graduated());
    assert_eq!(tiers.charge(usage(90, 20)), credits("20"));
    // The sum of the calls is the period's amount.
    let total: i64 = [(0, 30), (30, 70), (100, 1), (101, 49)]
        .into_iter()
        .map(|(before, units)| tiers.charge(usage(before, units)).micros())
        .sum();
    assert_eq!(Credits::from_micros(total), credits("140"));

    // The plan's free allowance comes off the period's units first.
    let mut allowance = price(ChargeModel::Standard {
        per_unit: d("0.05"),
    });
    allowance.free_units.insert("starter".into(), 100);
    let starter = |period_units, units| Usage {
        plan: Some("starter"),
        ..usage(period_units, units)
    };
    assert_eq!(allowance.charge(starter(0, 100)), Credits::ZERO);
    assert_eq!(allowance.charge(starter(90, 20)), credits("0.5"));
    assert_eq!(
        allowance.charge(usage(90, 20)),
        credits("1"),
        "no plan, no allowance"
    );

    // Fuel at its price per million, rounded half away from zero to the
    // millionth of a credit.
    let mut compute = price(ChargeModel::Standard {
        per_unit: Decimal::ZERO,
    });
    compute.per_million_fuel = d("2");
    let fuel = |fuel| Usage {
        fuel,
        ..usage(0, 0)
    };
    assert_eq!(compute.charge(fuel(1_500_000)), credits("3"));
    assert_eq!(compute.charge(fuel(1)), credits("0.000002"));
    compute.per_million_fuel = d("0.5");
    assert_eq!(
        compute.charge(fuel(1)),
        credits("0.000001"),
        "half a millionth rounds up"
    );
}

#[test]
fn the_hold_covers_the_most_a_call_may_be_charged() {
    // Volume pricing falls at 10,000 units: 20 more units after 9,990 cost
    // nothing (the period's amount falls), but 10 of them would cost 0.5.
    let falling = price(volume());
    assert_eq!(falling.charge(usage(9_990, 20)), Credits::ZERO);
    assert_eq!(falling.charge(usage(9_990, 10)), credits("0.5"));
    assert_eq!(falling.max_charge(usage(9_990, 20)), credits("0.5"));
    // For every model, no number of units up to the maximum costs more
    // than the hold.
    let models = [
        ChargeModel::Standard { per_unit: d("0.3") },
        ChargeModel::Package {
            size: 7,
            price: d("2"),
            free_units: 5,
        },
        graduated(),
        volume(),
    ];
    for model in models {
        let mut price = price(model);
        price.per_call = d("0.25");
        price.per_million_fuel = d("1");
        price.free_units.insert("starter".into(), 3);
        for plan in [None, Some("starter")] {
            for before in [0, 1, 6, 95, 99, 100, 9_980, 10_000, 49_990] {
                let most = Usage {
                    plan,
                    period_units: before,
                    units: 40,
                    fuel: 1_000_000,
                };
                let hold = price.max_charge(most);
                for units in 0..=40 {
                    let charged = price.charge(Usage { units, ..most });
                    assert!(
                        charged <= hold,
                        "{:?} {plan:?} before {before}: {units} units cost {charged}, held {hold}",
                        price.units
                    );
                }
            }
        }
    }
}

#[test]
fn the_price_is_the_tenants_own_else_everyones_as_of_the_call() {
    let at = |micros| Timestamp::from_micros(micros);
    let mut book = PriceBook::default();
    let mut first = price(ChargeModel::Standard { per_unit: d("1") });
    first.effective_from = at(100);
    let mut raised = first.clone();
    raised.effective_from = at(200);
    raised.units = ChargeModel::Standard { per_unit: d("2") };
    let mut custom = first.clone();
    custom.tenant = Some(TenantId(7));
    custom.units = ChargeModel::Standard { per_unit: d("0.5") };
    book.prices = vec![raised.clone(), first.clone(), custom.clone()];

    let tenant = TenantId(1);
    assert_eq!(
        book.price(tenant, "http-leads", "search", at(150)),
        Ok(&first)
    );
    assert_eq!(
        book.price(tenant, "http-leads", "search", at(200)),
        Ok(&raised)
    );
    // A call before any price took effect has none.
    assert_eq!(
        book.price(tenant, "http-leads", "search", at(99))
            .unwrap_err()
            .to_string(),
        "plugin http-leads function search has no price in pricing.toml; the operator must add a [[price]] for it"
    );
    assert_eq!(
        book.price(TenantId(7), "http-leads", "search", at(300)),
        Ok(&custom)
    );
    assert!(book.price(tenant, "http-leads", "enrich", at(300)).is_err());

    book.rules = vec![
        RuleBinding {
            rule: "volume-discount".into(),
            plan: Some("starter".into()),
            tenant: None,
        },
        RuleBinding {
            rule: "markup".into(),
            plan: None,
            tenant: Some(TenantId(7)),
        },
    ];
    assert_eq!(
        book.rule(TenantId(1), Some("starter")),
        Some("volume-discount")
    );
    assert_eq!(book.rule(TenantId(1), Some("professional")), None);
    assert_eq!(book.rule(TenantId(1), None), None);
    assert_eq!(book.rule(TenantId(7), Some("starter")), Some("markup"));
}

#[test]
fn malformed_tiers_are_refused() {
    let check = |tiers: Vec<Tier>| ChargeModel::Graduated { tiers }.validate();
    assert_eq!(check(vec![]), Err("tiers: give 1 to 32".into()));
    assert_eq!(
        check(vec![tier(Some(10), "1", "0")]),
        Err("tiers[0]: the last tier must leave out up_to, so every unit has a price".into())
    );
    assert_eq!(
        check(vec![tier(None, "1", "0"), tier(None, "1", "0")]),
        Err("tiers[0]: only the last tier may leave out up_to".into())
    );
    assert_eq!(
        check(vec![
            tier(Some(10), "1", "0"),
            tier(Some(10), "1", "0"),
            tier(None, "1", "0")
        ]),
        Err("tiers[1].up_to: 10 must be above the previous tier's 10".into())
    );
    assert_eq!(
        check(vec![tier(None, "-1", "0")]),
        Err("tiers[0].per_unit must not be negative, got -1".into())
    );
    assert_eq!(
        ChargeModel::Package {
            size: 0,
            price: d("1"),
            free_units: 0
        }
        .validate(),
        Err("package_size must be at least 1".into())
    );
    assert_eq!(
        check(vec![tier(Some(10), "1", "0"), tier(None, "0.5", "2")]),
        Ok(())
    );
}
