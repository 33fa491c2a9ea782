use super::*;
use crate::db::testing::TwoTenants;

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn issuer(name: &str, tax_rate: &str) -> Issuer {
    Issuer {
        name: name.into(),
        address: "1 Main Street\nSpringfield".into(),
        tax_rate: tax_rate.parse().unwrap(),
        tax_name: "VAT".into(),
    }
}

fn line(description: &str, quantity: i64, unit_price_minor: i64) -> NewLine {
    NewLine {
        description: description.into(),
        quantity,
        unit_price_minor,
    }
}

fn invoice(tenant: TenantId, lines: Vec<NewLine>) -> NewDocument {
    NewDocument {
        tenant,
        kind: Kind::Invoice,
        currency: usd(),
        lines,
        credits_invoice: None,
    }
}

fn credit_note(tenant: TenantId, invoice: i64, amount_minor: i64) -> NewDocument {
    NewDocument {
        tenant,
        kind: Kind::CreditNote,
        currency: usd(),
        lines: vec![line("Refund", 1, amount_minor)],
        credits_invoice: Some(invoice),
    }
}

type Setup = TwoTenants;

fn setup() -> Setup {
    TwoTenants::new(NOW)
}

#[test]
fn totals_are_exact_and_tax_is_rounded_once_half_away_from_zero() {
    // 3 × $19.99 − $5.00 = $54.97; 20% of it is $10.994, so $10.99.
    let lines = [line("Seats", 3, 1999), line("Discount", 1, -500)];
    assert_eq!(
        totals(&lines, "0.2".parse().unwrap()).unwrap(),
        Totals {
            subtotal_minor: 5497,
            tax_minor: 1099,
            total_minor: 6596
        }
    );
    // Half a cent rounds away from zero: 10% of $0.25 is 2.5 cents, so 3.
    let tax = |lines: &[NewLine], rate: &str| totals(lines, rate.parse().unwrap()).unwrap();
    assert_eq!(tax(&[line("x", 1, 25)], "0.1").tax_minor, 3);
    assert_eq!(tax(&[line("x", 1, 35)], "0.1").tax_minor, 4);
    // Rounding happens once, on the subtotal, not per line: per line, three
    // lines of 5 cents at 10% would each round 0.5 up to 1 cent (3 cents).
    let three = [line("a", 1, 5), line("b", 1, 5), line("c", 1, 5)];
    assert_eq!(tax(&three, "0.1").tax_minor, 2);
    // A rate with more places than cents: 8.25% of $49.00 is $4.0425.
    assert_eq!(
        tax(&[line("Starter", 1, 4900)], "0.0825"),
        Totals {
            subtotal_minor: 4900,
            tax_minor: 404,
            total_minor: 5304
        }
    );
    assert_eq!(tax(&[line("x", 7, 4900)], "0").tax_minor, 0);

    assert!(matches!(
        totals(&[line("credit", 1, -1)], Decimal::ZERO),
        Err(InvoiceError::NegativeTotal { subtotal_minor: -1 })
    ));
    assert!(matches!(
        totals(&[line("huge", i64::MAX, 2)], Decimal::ZERO),
        Err(InvoiceError::Overflow)
    ));
    assert!(matches!(
        totals(&[line("a", 1, i64::MAX), line("b", 1, 1)], Decimal::ZERO),
        Err(InvoiceError::Overflow)
    ));
}

#[test]
fn a_draft_is_stored_with_its_lines_and_sums_and_no_number() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let lines = vec![
        line("Starter plan, November", 1, 4900),
        line("Seats", 3, 1999),
    ];
    let draft = create(
        &mut conn,
        &issuer("Tollgate", "0.2"),
        &invoice(s.acme, lines),
        NOW,
    )
    .unwrap();
    assert_eq!(draft.state, State::Draft);
    assert_eq!((draft.number, draft.display_number()), (None, None));
    assert_eq!(draft.issuer, "Tollgate");
    assert_eq!(draft.currency, "USD");
    assert_eq!(draft.tax_rate, "0.2".parse::<Decimal>().unwrap());
    assert_eq!(
        draft.totals,
        Totals {
            subtotal_minor: 10897,
            tax_minor: 2179,
            total_minor: 13076
        }
    );
    assert_eq!(
        draft
            .lines
            .iter()
            .map(|line| (line.description.as_str(), line.amount_minor))
            .collect::<Vec<_>>(),
        [("Starter plan, November", 4900), ("Seats", 5997)]
    );
    assert_eq!(get(&mut conn, s.acme, draft.id).unwrap(), draft);
}

#[test]
fn numbers_run_without_gaps_per_issuer_and_kind() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let tollgate = issuer("Tollgate", "0");
    let reseller = issuer("Reseller Ltd", "0");
    let draft = |conn: &mut DbConnection, issuer: &Issuer| {
        create(
            conn,
            issuer,
            &invoice(s.acme, vec![line("Plan", 1, 4900)]),
            NOW,
        )
        .unwrap()
        .id
    };
    let (a, b, c) = (
        draft(&mut conn, &tollgate),
        draft(&mut conn, &tollgate),
        draft(&mut conn, &tollgate),
    );
    // Numbers follow finalization, not creation; a draft voided before it
    // was issued takes none.
    let number = |conn: &mut DbConnection, id| {
        finalize(conn, s.acme, id, NOW)
            .unwrap()
            .display_number()
            .unwrap()
    };
    assert_eq!(number(&mut conn, b), "INV-000001");
    void(&mut conn, s.acme, c, NOW).unwrap();
    assert_eq!(number(&mut conn, a), "INV-000002");
    // A refused finalization takes no number either.
    assert!(matches!(
        finalize(&mut conn, s.acme, a, NOW),
        Err(InvoiceError::WrongState {
            state: "open",
            action: "finalized",
            ..
        })
    ));
    assert!(matches!(
        finalize(&mut conn, s.acme, c, NOW),
        Err(InvoiceError::WrongState { state: "void", .. })
    ));
    let other = draft(&mut conn, &reseller);
    assert_eq!(number(&mut conn, other), "INV-000001");
    let d = draft(&mut conn, &tollgate);
    assert_eq!(number(&mut conn, d), "INV-000003");
    // Credit notes run their own series.
    let note = create(&mut conn, &tollgate, &credit_note(s.acme, a, 100), NOW).unwrap();
    assert_eq!(number(&mut conn, note.id), "CN-000001");
    // A voided document keeps its number: the series has no hole.
    let voided = void(&mut conn, s.acme, d, NOW).unwrap();
    assert_eq!(voided.display_number().as_deref(), Some("INV-000003"));
    let e = draft(&mut conn, &tollgate);
    assert_eq!(number(&mut conn, e), "INV-000004");
}

#[test]
fn concurrent_finalizations_take_consecutive_numbers() {
    let s = setup();
    let tollgate = issuer("Tollgate", "0");
    let threads = 6;
    let per_thread = 5;
    let mut numbers: Vec<i64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = s.database.get().unwrap();
                    (0..per_thread)
                        .map(|_| {
                            let id = create(
                                &mut conn,
                                &tollgate,
                                &invoice(s.acme, vec![line("Plan", 1, 4900)]),
                                NOW,
                            )
                            .unwrap()
                            .id;
                            finalize(&mut conn, s.acme, id, NOW)
                                .unwrap()
                                .number
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    numbers.sort();
    assert_eq!(numbers, (1..=threads * per_thread).collect::<Vec<i64>>());
}

#[test]
fn states_move_only_forward() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let tollgate = issuer("Tollgate", "0");
    let new = |conn: &mut DbConnection| {
        create(
            conn,
            &tollgate,
            &invoice(s.acme, vec![line("Plan", 1, 4900)]),
            NOW,
        )
        .unwrap()
        .id
    };
    let later = Timestamp::from_micros(NOW.micros() + 1_000_000);

    let a = new(&mut conn);
    assert!(matches!(
        mark_paid(&mut conn, s.acme, a, later),
        Err(InvoiceError::WrongState {
            state: "draft",
            action: "paid",
            ..
        })
    ));
    finalize(&mut conn, s.acme, a, NOW).unwrap();
    let paid = mark_paid(&mut conn, s.acme, a, later).unwrap();
    assert_eq!((paid.state, paid.closed_at), (State::Paid, Some(later)));
    for refused in [
        void(&mut conn, s.acme, a, later),
        mark_uncollectible(&mut conn, s.acme, a, later),
        mark_paid(&mut conn, s.acme, a, later),
    ] {
        assert!(
            matches!(refused, Err(InvoiceError::WrongState { state: "paid", .. })),
            "{refused:?}"
        );
    }

    // Uncollectible, then paid after all.
    let b = new(&mut conn);
    finalize(&mut conn, s.acme, b, NOW).unwrap();
    assert_eq!(
        mark_uncollectible(&mut conn, s.acme, b, later)
            .unwrap()
            .state,
        State::Uncollectible
    );
    assert_eq!(
        mark_paid(&mut conn, s.acme, b, later).unwrap().state,
        State::Paid
    );

    // Void is final.
    let c = new(&mut conn);
    finalize(&mut conn, s.acme, c, NOW).unwrap();
    let voided = void(&mut conn, s.acme, c, later).unwrap();
    assert_eq!((voided.state, voided.closed_at), (State::Void, Some(later)));
    assert!(matches!(
        mark_paid(&mut conn, s.acme, c, later),
        Err(InvoiceError::WrongState { state: "void", .. })
    ));

    // Another tenant's document does not exist for this one.
    assert!(matches!(
        get(&mut conn, s.globex, a),
        Err(InvoiceError::NotFound(id)) if id == a
    ));
    assert!(matches!(
        void(&mut conn, s.globex, c, later),
        Err(InvoiceError::NotFound(_))
    ));
    assert!(
        list(&mut conn, s.globex, Kind::Invoice, None, 10)
            .unwrap()
            .is_empty()
    );
    let listed: Vec<i64> = list(&mut conn, s.acme, Kind::Invoice, None, 10)
        .unwrap()
        .iter()
        .map(|document| document.id)
        .collect();
    assert_eq!(listed, [a, b, c]);
    let after_a: Vec<i64> = list(&mut conn, s.acme, Kind::Invoice, Some(a), 1)
        .unwrap()
        .iter()
        .map(|document| document.id)
        .collect();
    assert_eq!(after_a, [b]);
}

#[test]
fn credit_notes_never_credit_more_than_their_invoice() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let tollgate = issuer("Tollgate", "0.2");
    // $49.00 plus 20% tax: $58.80.
    let paid = create(
        &mut conn,
        &tollgate,
        &invoice(s.acme, vec![line("Plan", 1, 4900)]),
        NOW,
    )
    .unwrap();
    assert!(matches!(
        create(
            &mut conn,
            &tollgate,
            &credit_note(s.acme, paid.id, 100),
            NOW
        ),
        Err(InvoiceError::NotCreditable { state: "draft", .. })
    ));
    finalize(&mut conn, s.acme, paid.id, NOW).unwrap();
    mark_paid(&mut conn, s.acme, paid.id, NOW).unwrap();

    // Credit notes are not taxed again here: a zero-rate issuer writes
    // them for the gross amount given back.
    let refunds = issuer("Tollgate", "0");
    let first = create(
        &mut conn,
        &refunds,
        &credit_note(s.acme, paid.id, 5000),
        NOW,
    )
    .unwrap();
    assert_eq!(first.totals.total_minor, 5000);
    assert!(matches!(
        create(&mut conn, &refunds, &credit_note(s.acme, paid.id, 881), NOW),
        Err(InvoiceError::CreditExceedsInvoice {
            remaining_minor: 880,
            total_minor: 881,
            ..
        })
    ));
    // A voided credit note no longer counts.
    void(&mut conn, s.acme, first.id, NOW).unwrap();
    create(
        &mut conn,
        &refunds,
        &credit_note(s.acme, paid.id, 5880),
        NOW,
    )
    .unwrap();

    let mut eur = credit_note(s.acme, paid.id, 1);
    eur.currency = Currency::parse("EUR").unwrap();
    assert!(matches!(
        create(&mut conn, &refunds, &eur, NOW),
        Err(InvoiceError::CurrencyMismatch { .. })
    ));
    // Another tenant cannot credit Acme's invoice.
    assert!(matches!(
        create(&mut conn, &refunds, &credit_note(s.globex, paid.id, 1), NOW),
        Err(InvoiceError::NotFound(_))
    ));
    let mut untargeted = credit_note(s.acme, paid.id, 1);
    untargeted.credits_invoice = None;
    assert!(matches!(
        create(&mut conn, &refunds, &untargeted, NOW),
        Err(InvoiceError::CreditNoteTarget)
    ));
}

#[test]
fn bad_documents_are_refused_and_store_nothing() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let tollgate = issuer("Tollgate", "0");
    let refused = |conn: &mut DbConnection, lines: Vec<NewLine>| {
        create(conn, &tollgate, &invoice(s.acme, lines), NOW).unwrap_err()
    };
    assert!(matches!(refused(&mut conn, vec![]), InvoiceError::NoLines));
    assert!(matches!(
        refused(&mut conn, vec![line("Plan", 0, 4900)]),
        InvoiceError::BadLine { line: 1, .. }
    ));
    assert!(matches!(
        refused(&mut conn, vec![line("Plan", 1, 1), line(" ", 1, 1)]),
        InvoiceError::BadLine { line: 2, .. }
    ));
    assert!(matches!(
        refused(&mut conn, vec![line("Plan", 1, 1); LINES_MAX + 1]),
        InvoiceError::TooManyLines(_)
    ));
    assert!(matches!(
        refused(&mut conn, vec![line("Refund", 1, -100)]),
        InvoiceError::NegativeTotal { .. }
    ));
    assert!(matches!(
        refused(&mut conn, vec![line(&"x".repeat(TEXT_BYTES_MAX + 1), 1, 1)]),
        InvoiceError::BadLine { line: 1, .. }
    ));
    let mut targeted = invoice(s.acme, vec![line("Plan", 1, 1)]);
    targeted.credits_invoice = Some(1);
    assert!(matches!(
        create(&mut conn, &tollgate, &targeted, NOW),
        Err(InvoiceError::CreditNoteTarget)
    ));
    assert!(
        list(&mut conn, s.acme, Kind::Invoice, None, 10)
            .unwrap()
            .is_empty()
    );
}
