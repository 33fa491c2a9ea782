use std::collections::BTreeMap;

use super::import::{self, CsvImport};
use super::leads::{self, DoNotContact, Fields, LeadError};
use super::scoring::{self, Rule, Rules};
use crate::db::testing::TwoTenants;
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::units::Timestamp;

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000); // 2026-01-01
const DAY: i64 = 86_400_000_000;

fn person(first: &str, last: &str, email: &str) -> Fields {
    Fields {
        first_name: Some(first.to_owned()),
        last_name: Some(last.to_owned()),
        email: Some(email.to_owned()),
        ..Fields::default()
    }
}

fn save(
    conn: &mut DbConnection,
    tenant: TenantId,
    fields: Fields,
) -> Result<leads::Saved, LeadError> {
    let fields = fields.validated()?;
    db::write_transaction(conn, |conn| {
        leads::save(conn, tenant, &Rules::default(), &fields, "api", NOW)
    })
}

#[test]
fn linkedin_profiles_are_the_same_whatever_their_spelling() {
    for url in [
        "https://www.linkedin.com/in/jane-doe",
        "http://linkedin.com/in/Jane-Doe/",
        "linkedin.com/in/jane-doe?trk=profile",
        "https://de.linkedin.com/in/jane-doe/#about",
    ] {
        assert_eq!(
            leads::linkedin_key(url).unwrap(),
            "linkedin.com/in/jane-doe",
            "{url}"
        );
    }
    for url in [
        "https://example.com/in/jane",
        "https://linkedin.com/",
        "jane-doe",
    ] {
        assert!(leads::linkedin_key(url).is_err(), "{url}");
    }
}

#[test]
fn fields_are_trimmed_and_checked() {
    let fields = Fields {
        first_name: Some("  Ada ".into()),
        last_name: Some("".into()),
        email: Some(" ada@example.com ".into()),
        domain: Some("https://www.Example.com/about".into()),
        time_zone: Some("Asia/Tokyo".into()),
        tags: ["vip ".to_owned()].into(),
        ..Fields::default()
    }
    .validated()
    .unwrap();
    assert_eq!(fields.first_name.as_deref(), Some("Ada"));
    assert_eq!(fields.last_name, None);
    assert_eq!(fields.email.as_deref(), Some("ada@example.com"));
    assert_eq!(fields.domain.as_deref(), Some("example.com"));
    assert!(fields.tags.contains("vip"));

    let check = |fields: Fields, field: &str| match fields.validated() {
        Err(LeadError::Invalid { field: named, .. }) => assert_eq!(named, field),
        other => panic!("{field}: {other:?}"),
    };
    check(person("A", "B", "not an address"), "email");
    check(
        Fields {
            time_zone: Some("Mars/Olympus".into()),
            ..person("A", "B", "a@b.co")
        },
        "time_zone",
    );
    check(
        Fields {
            first_name: Some("x".repeat(leads::FIELD_CHARS_MAX + 1)),
            ..person("A", "B", "a@b.co")
        },
        "first_name",
    );
    check(
        Fields {
            custom_fields: BTreeMap::from([("bad name".into(), "x".into())]),
            ..person("A", "B", "a@b.co")
        },
        "custom_fields",
    );
    check(
        Fields {
            company_size: Some(-1),
            ..person("A", "B", "a@b.co")
        },
        "company_size",
    );
}

#[test]
fn a_lead_is_found_again_by_email_linkedin_or_name_and_domain() {
    let tenants = TwoTenants::new(NOW);
    let mut conn = tenants.database.get().unwrap();
    let acme = tenants.acme;
    let first = save(
        &mut conn,
        acme,
        Fields {
            linkedin_url: Some("https://www.linkedin.com/in/ada".into()),
            domain: Some("example.com".into()),
            ..person("Ada", "Lovelace", "Ada@Example.com")
        },
    )
    .unwrap();
    assert!(first.created);

    // The same email in another case merges, and new values replace old.
    let by_email = save(
        &mut conn,
        acme,
        Fields {
            title: Some("VP Sales".into()),
            ..person("Ada", "King", "ada@example.COM")
        },
    )
    .unwrap();
    assert_eq!((by_email.id, by_email.created), (first.id, false));
    // Then the name key is "ada king@example.com"; the LinkedIn URL, spelt
    // another way, finds her too, and empty values erase nothing.
    let by_linkedin = save(
        &mut conn,
        acme,
        Fields {
            linkedin_url: Some("linkedin.com/in/ADA/".into()),
            phone: Some("+44 20 7946 0000".into()),
            ..Fields::default()
        },
    )
    .unwrap();
    assert_eq!((by_linkedin.id, by_linkedin.created), (first.id, false));
    let by_name = save(
        &mut conn,
        acme,
        Fields {
            first_name: Some("ADA".into()),
            last_name: Some("king".into()),
            domain: Some("www.example.com".into()),
            tags: ["met-at-conference".to_owned()].into(),
            ..Fields::default()
        },
    )
    .unwrap();
    assert_eq!((by_name.id, by_name.created), (first.id, false));
    let lead = leads::get(&mut conn, acme, first.id).unwrap();
    assert_eq!(lead.fields.email.as_deref(), Some("ada@example.COM"));
    assert_eq!(lead.fields.title.as_deref(), Some("VP Sales"));
    assert_eq!(lead.fields.phone.as_deref(), Some("+44 20 7946 0000"));
    // The last data wins, spelling included.
    assert_eq!(lead.fields.last_name.as_deref(), Some("king"));
    assert!(lead.fields.tags.contains("met-at-conference"));

    // Another tenant's lead with the same email is another lead, and the
    // first tenant's is not found from it.
    let globex = save(
        &mut conn,
        tenants.globex,
        person("Ada", "L", "ada@example.com"),
    )
    .unwrap();
    assert!(globex.created);
    assert!(matches!(
        leads::get(&mut conn, tenants.globex, first.id),
        Err(LeadError::NotFound(_))
    ));

    // Data that matches two different leads is refused and changes neither.
    let grace = save(&mut conn, acme, person("Grace", "Hopper", "grace@navy.mil")).unwrap();
    let both = save(
        &mut conn,
        acme,
        Fields {
            linkedin_url: Some("https://linkedin.com/in/ada".into()),
            ..person("Grace", "Hopper", "grace@navy.mil")
        },
    );
    assert!(
        matches!(both, Err(LeadError::Ambiguous { first: a, second: b }) if a == first.id && b == grace.id),
        "{both:?}"
    );
    // A lead that nothing could find again is refused.
    assert!(matches!(
        save(
            &mut conn,
            acme,
            Fields {
                title: Some("CTO".into()),
                ..Fields::default()
            }
        ),
        Err(LeadError::NoIdentity)
    ));
}

fn csv_import(csv: &str, mapping: Option<&[(&str, &str)]>) -> CsvImport {
    CsvImport {
        csv: csv.as_bytes().to_vec(),
        mapping: mapping.map(|pairs| {
            pairs
                .iter()
                .map(|(from, to)| (from.to_string(), to.to_string()))
                .collect()
        }),
        tags: vec!["import".to_owned()],
    }
}

#[test]
fn a_csv_import_merges_duplicates_and_reports_every_row() {
    let tenants = TwoTenants::new(NOW);
    let mut conn = tenants.database.get().unwrap();
    let existing = save(
        &mut conn,
        tenants.acme,
        Fields {
            linkedin_url: Some("https://www.linkedin.com/in/bob".into()),
            ..person("Bob", "Stone", "bob@old.example")
        },
    )
    .unwrap();
    let csv = "\
E-mail,Given,Family,Profile,Employees,Industry,Notes
ANN@example.com,Ann,Lee,,1200,SaaS,first
ann@EXAMPLE.com,Ann,Lee-Smith,,,,same email in another case
,Bob,Stone,linkedin.com/in/bob/,50,,same LinkedIn URL
not-an-email,Carl,Moe,,,,
,Dana,Fox,,,,no key at all
eve@example.com,Eve,Ray,,lots,,
fay@example.com,Fay,\"Quoted, Name\",,,,
gus@example.com,Gus,Too,,,,,extra cell
";
    let mapping = [
        ("E-mail", "email"),
        ("Given", "first_name"),
        ("Family", "last_name"),
        ("Profile", "linkedin_url"),
        ("Employees", "company_size"),
        ("Industry", "custom.industry"),
    ];
    let report = import::import_csv(
        &tenants.database,
        tenants.acme,
        &csv_import(csv, Some(&mapping)),
        NOW,
    )
    .unwrap();
    assert_eq!(
        (report.rows, report.created, report.updated, report.skipped),
        (8, 2, 2, 4),
        "{report:#?}"
    );
    assert_eq!(report.ignored_columns, vec!["Notes".to_owned()]);
    let lines: Vec<u64> = report.skips.iter().map(|skip| skip.line).collect();
    assert_eq!(lines, vec![5, 6, 7, 9]);
    assert!(
        report.skips[0].reason.starts_with("email:"),
        "{:?}",
        report.skips[0]
    );
    assert!(
        report.skips[1].reason.contains("needs an email"),
        "{:?}",
        report.skips[1]
    );
    assert!(
        report.skips[2].reason.contains("company_size"),
        "{:?}",
        report.skips[2]
    );
    assert!(
        report.skips[3].reason.contains("8 cells"),
        "{:?}",
        report.skips[3]
    );

    let page = leads::list(
        &mut conn,
        tenants.acme,
        &leads::Filter::default(),
        leads::Sort::Oldest,
        None,
        100,
    )
    .unwrap();
    let names: Vec<(Option<&str>, Option<&str>)> = page
        .leads
        .iter()
        .map(|lead| {
            (
                lead.fields.first_name.as_deref(),
                lead.fields.last_name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (Some("Bob"), Some("Stone")),
            (Some("Ann"), Some("Lee-Smith")),
            (Some("Fay"), Some("Quoted, Name")),
        ]
    );
    let bob = &page.leads[0];
    assert_eq!(bob.id, existing.id);
    assert_eq!(bob.fields.company_size, Some(50));
    assert_eq!(bob.fields.email.as_deref(), Some("bob@old.example"));
    let ann = &page.leads[1];
    assert_eq!(ann.fields.company_size, Some(1200));
    assert_eq!(
        ann.fields.custom_fields.get("industry").map(String::as_str),
        Some("SaaS")
    );
    assert!(ann.fields.tags.contains("import"));
}

#[test]
fn a_csv_header_maps_itself_and_a_bad_mapping_is_refused() {
    let tenants = TwoTenants::new(NOW);
    let report = import::import_csv(
        &tenants.database,
        tenants.acme,
        &csv_import(
            "Email Address,First Name,Job Title,Twitter\na@x.io,A,CEO,@a\n",
            None,
        ),
        NOW,
    )
    .unwrap();
    assert_eq!(
        (report.created, report.ignored_columns.clone()),
        (1, vec!["Twitter".to_owned()])
    );

    let refused = |csv: &str, mapping: Option<&[(&str, &str)]>| match import::import_csv(
        &tenants.database,
        tenants.acme,
        &csv_import(csv, mapping),
        NOW,
    ) {
        Err(import::ImportError::Mapping(reason)) => reason,
        other => panic!("{other:?}"),
    };
    assert!(refused("Name,Title\nA,B\n", None).contains("no column maps to email"));
    assert!(refused("Email\na@x.io\n", Some(&[("Mail", "email")])).contains("\"Mail\""));
    assert!(refused("Email\na@x.io\n", Some(&[("Email", "e-mail")])).contains("\"e-mail\""));
}

#[test]
fn ten_thousand_rows_import_in_batches() {
    let tenants = TwoTenants::new(NOW);
    let mut csv = String::from("email,first_name,last_name,company_size\n");
    for row in 0..10_000 {
        // Every hundredth row repeats an earlier address in capitals.
        let email = match row % 100 {
            99 => format!("LEAD{}@EXAMPLE.COM", row - 1),
            _ => format!("lead{row}@example.com"),
        };
        csv.push_str(&format!("{email},First{row},Last{row},{row}\n"));
    }
    let report = import::import_csv(
        &tenants.database,
        tenants.acme,
        &csv_import(&csv, None),
        NOW,
    )
    .unwrap();
    assert_eq!(
        (report.rows, report.created, report.updated, report.skipped),
        (10_000, 9_900, 100, 0)
    );
    let mut conn = tenants.database.get().unwrap();
    let page = leads::list(
        &mut conn,
        tenants.acme,
        &leads::Filter {
            text: Some("lead98@".into()),
            ..leads::Filter::default()
        },
        leads::Sort::Oldest,
        None,
        10,
    )
    .unwrap();
    assert_eq!(page.leads.len(), 1);
    assert_eq!(page.leads[0].fields.first_name.as_deref(), Some("First99"));
}

fn rule(field: &str) -> Rule {
    Rule {
        field: Some(field.to_owned()),
        ..Rule::default()
    }
}

fn event_rule(kind: &str, points: i64, half_life_days: Option<u32>) -> Rule {
    Rule {
        event: Some(kind.to_owned()),
        points,
        half_life_days,
        ..Rule::default()
    }
}

#[test]
fn scores_add_field_points_and_decaying_event_points() {
    let rules = Rules {
        rules: vec![
            Rule {
                contains: Some("vp".into()),
                points: 20,
                ..rule("title")
            },
            Rule {
                at_least: Some(200),
                points: 10,
                ..rule("company_size")
            },
            Rule {
                equals: Some("saas".into()),
                points: 5,
                ..rule("custom.industry")
            },
            Rule {
                present: Some(false),
                points: -3,
                ..rule("phone")
            },
            event_rule("opened", 4, Some(10)),
            event_rule("replied", 15, None),
        ],
    };
    rules.validate().unwrap();
    let fields = Fields {
        title: Some("VP of Sales".into()),
        company_size: Some(200),
        custom_fields: BTreeMap::from([("industry".into(), "SaaS".into())]),
        ..person("A", "B", "a@b.co")
    };
    let at = |days: i64| Timestamp::from_micros(NOW.micros() + days * DAY);
    let events = vec![("opened".to_owned(), NOW), ("replied".to_owned(), NOW)];
    // 20 + 10 + 5 - 3 + 4 + 15; the open's 4 points halve after 10 days.
    assert_eq!(
        scoring::compute(&rules, &fields, &events, NOW),
        (51, Some(at(10)))
    );
    assert_eq!(
        scoring::compute(&rules, &fields, &events, at(10)),
        (49, Some(at(20)))
    );
    assert_eq!(
        scoring::compute(&rules, &fields, &events, at(25)),
        (48, Some(at(30)))
    );
    assert_eq!(
        scoring::compute(&rules, &fields, &events, at(30)),
        (47, None)
    );
    let small = Fields {
        company_size: Some(199),
        ..fields.clone()
    };
    assert_eq!(scoring::compute(&rules, &small, &[], NOW).0, 22);
}

#[test]
fn bad_scoring_rules_are_named() {
    let check = |rule: Rule, expect: &str| {
        let error = Rules { rules: vec![rule] }.validate().unwrap_err();
        assert!(
            error.starts_with("rules[0]: ") && error.contains(expect),
            "{error}"
        );
    };
    check(
        Rule {
            points: 5,
            ..rule("title")
        },
        "exactly one of",
    );
    check(
        Rule {
            contains: Some("x".into()),
            at_least: Some(1),
            ..rule("title")
        },
        "exactly one of",
    );
    check(
        Rule {
            at_least: Some(1),
            ..rule("title")
        },
        "company_size",
    );
    check(
        Rule {
            contains: Some("x".into()),
            ..rule("company_size")
        },
        "at_least",
    );
    check(
        Rule {
            contains: Some("x".into()),
            ..rule("shoe_size")
        },
        "not a lead field",
    );
    check(event_rule("waved", 1, None), "not one of");
    check(event_rule("opened", 1, Some(0)), "half_life_days");
    check(
        Rule {
            points: 5_000,
            ..event_rule("opened", 0, None)
        },
        "points",
    );
}

#[test]
fn leads_sort_and_filter_by_score_across_pages() {
    let tenants = TwoTenants::new(NOW);
    let mut conn = tenants.database.get().unwrap();
    let rules = Rules {
        rules: vec![Rule {
            at_least: Some(0),
            points: 1,
            ..rule("company_size")
        }],
    };
    db::write_transaction(&mut conn, |conn| {
        scoring::set_rules(conn, tenants.acme, &rules, NOW)
    })
    .unwrap();
    for index in 0..7 {
        let fields = Fields {
            company_size: (index % 2 == 0).then_some(10),
            tags: match index % 3 {
                0 => ["hot".to_owned()].into(),
                _ => Default::default(),
            },
            ..person("P", &format!("{index}"), &format!("p{index}@x.io"))
        };
        let fields = fields.validated().unwrap();
        db::write_transaction(&mut conn, |conn| {
            leads::save(conn, tenants.acme, &rules, &fields, "api", NOW)
        })
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = leads::list(
            &mut conn,
            tenants.acme,
            &leads::Filter::default(),
            leads::Sort::ScoreDesc,
            cursor,
            3,
        )
        .unwrap();
        seen.extend(
            page.leads
                .iter()
                .map(|lead| (lead.score, lead.fields.last_name.clone().unwrap())),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expect: Vec<(i64, String)> = [
        (1, "6"),
        (1, "4"),
        (1, "2"),
        (1, "0"),
        (0, "5"),
        (0, "3"),
        (0, "1"),
    ]
    .iter()
    .map(|(score, name)| (*score, name.to_string()))
    .collect();
    assert_eq!(seen, expect);
    let hot_scored = leads::list(
        &mut conn,
        tenants.acme,
        &leads::Filter {
            tag: Some("hot".into()),
            score_min: Some(1),
            ..leads::Filter::default()
        },
        leads::Sort::Oldest,
        None,
        10,
    )
    .unwrap();
    let names: Vec<&str> = hot_scored
        .leads
        .iter()
        .map(|lead| lead.fields.last_name.as_deref().unwrap())
        .collect();
    assert_eq!(names, vec!["0", "6"]);
}

#[test]
fn erasing_a_lead_keeps_its_unsubscribe() {
    let tenants = TwoTenants::new(NOW);
    let mut conn = tenants.database.get().unwrap();
    let acme = tenants.acme;
    let saved = save(&mut conn, acme, person("Ann", "Lee", "ann@example.com")).unwrap();
    db::write_transaction(&mut conn, |conn| {
        let opened = leads::NewEvent {
            kind: "opened",
            occurred_at: NOW,
            detail: None,
            step_run: None,
        };
        leads::record_event(conn, acme, &Rules::default(), saved.id, opened, NOW)?;
        leads::suppress(
            conn,
            acme,
            "ANN@example.com",
            DoNotContact::Unsubscribed,
            NOW,
        )
    })
    .unwrap();
    let lead = leads::get(&mut conn, acme, saved.id).unwrap();
    assert_eq!(lead.do_not_contact, Some(DoNotContact::Unsubscribed));
    // An unsubscribe is not lifted by hand.
    assert!(matches!(
        leads::clear_do_not_contact(&mut conn, acme, saved.id, NOW),
        Err(LeadError::NotManual { .. })
    ));
    db::write_transaction(&mut conn, |conn| leads::erase(conn, acme, saved.id)).unwrap();
    assert!(matches!(
        leads::get(&mut conn, acme, saved.id),
        Err(LeadError::NotFound(_))
    ));
    assert!(leads::events(&mut conn, acme, saved.id).unwrap().is_empty());
    assert!(leads::is_suppressed(&mut conn, acme, "ann@EXAMPLE.com").unwrap());
    assert!(!leads::is_suppressed(&mut conn, tenants.globex, "ann@example.com").unwrap());
    // Imported again, she is a new lead, still suppressed.
    let again = save(&mut conn, acme, person("Ann", "Lee", "ann@example.com")).unwrap();
    assert!(again.created);
    let lead = leads::get(&mut conn, acme, again.id).unwrap();
    assert_eq!(lead.do_not_contact, Some(DoNotContact::Unsubscribed));
}
