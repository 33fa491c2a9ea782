//! Sequences end to end under a controlled clock: email over real SMTP
//! (aiosmtpd on loopback) with personalisation, unsubscribe headers and
//! link, tracking and sender identity; an email → wait → LinkedIn →
//! call-task sequence that stops on a reply (not on an auto-reply) and on a
//! hard bounce; a daily cap over a rolling 24 hours; a lead's send window
//! in Tokyo time; a tenant out of credits. SQLite, or PostgreSQL with
//! TEST_DATABASE_URL.

mod engagement_world;

use engagement_world::*;
use serde_json::json;

fn email_step(mailbox: i64, subject: &str, body: &str) -> serde_json::Value {
    json!({"kind": "email", "mailbox": mailbox, "variants": [{"subject": subject, "body": body}]})
}

#[test]
fn an_email_goes_out_over_smtp_personalised_tracked_and_unsubscribable() {
    let world = World::start(Setup::default());
    let mailbox = world.mailbox("email", "sam@acme.example", None);
    let ada = world.lead(json!({"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "company": "Engines & Co"}));
    let nameless = world.lead(json!({"email": "x@example.com"}));
    let sequence = world.sequence(json!({
        "name": "Intro",
        "steps": [email_step(
            mailbox,
            "A demo for {{ lead.company | default(\"your team\") }}",
            "Hi {{ lead.first_name }},\n\nsee https://acme.example/demo\n\n{{ sender.name }}\nUnsubscribe: {{ unsubscribe_url }}",
        )],
    }));
    world.enroll(sequence, &[ada, nameless]);
    world.runner.tick().unwrap();

    let received = world.smtp.received();
    assert_eq!(received.len(), 1, "only Ada's email can be rendered");
    let mail = parse(&received[0]);
    assert_eq!(mail.to, vec!["ada@example.com"]);
    assert_eq!(received[0].mail_from, "sam@acme.example");
    assert_eq!(mail.from, "Sam from Acme <sam@acme.example>");
    assert_eq!(mail.subject, "A demo for Engines & Co");
    assert!(
        mail.text
            .starts_with("Hi Ada,\n\nsee https://acme.example/demo\n\nSam from Acme\n"),
        "{}",
        mail.text
    );
    // RFC 8058: a one-click https link back to this host, and the header
    // that says a POST to it unsubscribes.
    let header = &mail.headers["list-unsubscribe"];
    assert!(
        header.starts_with("<https://tollgate.test/api/v1/channels/email/callbacks/t"),
        "{header}"
    );
    assert_eq!(
        mail.headers["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );
    // Tracking: the link goes through the host, and a pixel reports opens.
    let html = mail.html.clone().expect("a tracked email has an HTML part");
    let click = link(&html, "https://tollgate.test/t/c/");
    let pixel = link(&html, "https://tollgate.test/t/o/");
    let unsubscribe_page = link(&mail.text, "https://tollgate.test/u/");

    // The lead without a first name: blocked, naming the step and field.
    let enrollments = world.enrollments(sequence);
    assert_eq!(enrollments[&ada].0, "completed");
    let (status, reason) = &enrollments[&nameless];
    assert_eq!(status, "blocked");
    let reason = reason.as_deref().unwrap();
    assert!(
        reason.starts_with("step 1 (email): lead.first_name has no value"),
        "{reason}"
    );
    // One email sent: 0.5 credits.
    assert_eq!(world.balance(), "999.5");

    let (status, _, _) = world.follow("GET", &pixel, "text/plain", "");
    assert_eq!(status, 200);
    let (status, location, _) = world.follow("GET", &click, "text/plain", "");
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("https://acme.example/demo"))
    );
    // A link whose signature does not cover its target goes nowhere.
    let forged = click.replace("acme.example%2Fdemo", "evil.example%2F");
    assert_eq!(world.follow("GET", &forged, "text/plain", "").0, 404);
    let (_, lead) = world.call("GET", &format!("/leads/{ada}"), None);
    let kinds: Vec<&str> = lead["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["clicked", "opened", "sent"]);
    let (_, detail) = world.call("GET", &format!("/sequences/{sequence}"), None);
    let result = &detail["results"][0];
    assert_eq!(
        (
            &result["variant"],
            &result["runs"]["sent"],
            &result["opened"],
            &result["clicked"]
        ),
        (&json!("A"), &json!(1), &json!(1), &json!(1)),
        "{detail}"
    );

    // The unsubscribe page asks first; then a one-click POST to the header's
    // URL (as a mail client sends it) unsubscribes.
    let (status, _, page) = world.follow("GET", &unsubscribe_page, "text/plain", "");
    assert_eq!(status, 200);
    assert!(page.contains("<form method=\"post\""), "{page}");
    let one_click = header
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, answer) = world.follow(
        "POST",
        &one_click,
        "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 200, "{answer}");
    let (_, lead) = world.call("GET", &format!("/leads/{ada}"), None);
    assert_eq!(
        lead["lead"]["do_not_contact"]["reason"], "unsubscribed",
        "{lead}"
    );
    // Suppressed tenant-wide: she is not enrolled anywhere again.
    let other =
        world.sequence(json!({"name": "Other", "steps": [email_step(mailbox, "Hi", "Hello")]}));
    let (_, answer) = world.call(
        "POST",
        &format!("/sequences/{other}/enrollments"),
        Some(&json!({"leads": [ada]}).to_string()),
    );
    assert_eq!(answer["results"][0]["result"], "do_not_contact");
}

/// An inbound email answering `mail`, from `from`, posted to the tenant's
/// email callback (whose URL the List-Unsubscribe header gave).
fn inbound(
    world: &World,
    mail: &Mail,
    from: &str,
    extra_headers: &str,
    body: &str,
) -> serde_json::Value {
    let callback = link(
        &mail.headers["list-unsubscribe"],
        "https://tollgate.test/api/v1/channels/email/callbacks/",
    );
    let callback = callback.split('?').next().unwrap();
    let raw = format!(
        "From: {from}\r\nTo: sam@acme.example\r\nSubject: Re: {}\r\nDate: Thu, 08 Jan 2026 12:00:00 +0000\r\nMessage-ID: <{}@mail.example>\r\nIn-Reply-To: <{}>\r\n{extra_headers}Content-Type: text/plain\r\n\r\n{body}\r\n",
        mail.subject,
        from.len(),
        mail.message_id,
    );
    let (status, _, answer) = world.follow("POST", callback, "message/rfc822", &raw);
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str(&answer).unwrap()
}

fn bounce(world: &World, mail: &Mail, recipient: &str) -> serde_json::Value {
    let callback = link(
        &mail.headers["list-unsubscribe"],
        "https://tollgate.test/api/v1/channels/email/callbacks/",
    );
    let callback = callback.split('?').next().unwrap();
    let raw = format!(
        "From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\r\nTo: sam@acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.acme.example\r\n\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Sam <sam@acme.example>\r\nTo: {recipient}\r\nMessage-ID: <{}>\r\nSubject: {}\r\n\r\n--b1--\r\n",
        mail.message_id, mail.subject,
    );
    let (status, _, answer) = world.follow("POST", callback, "message/rfc822", &raw);
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn email_wait_linkedin_and_a_call_task_run_in_order_and_stop_on_reply_and_bounce() {
    // Two connection requests reach the fake LinkedIn API: each looks the
    // member up, then invites them.
    let person = |id: &str| (200, format!(r#"{{"id": "{id}"}}"#));
    let world = World::start(Setup {
        linkedin: vec![
            person("p-ada"),
            person("inv-1"),
            person("p-cy"),
            person("inv-2"),
        ],
        ..Setup::default()
    });
    let mailbox = world.mailbox("email", "sam@acme.example", None);
    let linkedin = world.mailbox("linkedin", "sam-acme", None);
    let lead = |name: &str| {
        world.lead(json!({
            "email": format!("{name}@example.com"),
            "first_name": name,
            "linkedin_url": format!("https://www.linkedin.com/in/{name}"),
        }))
    };
    let (ada, bea, cy, dan) = (lead("ada"), lead("bea"), lead("cy"), lead("dan"));
    let sequence = world.sequence(json!({
        "name": "Outbound",
        "tracking": false,
        "steps": [
            email_step(mailbox, "Hello {{ lead.first_name }}", "Hi {{ lead.first_name }}, a quick question."),
            {"kind": "wait", "business_days": 2},
            {"kind": "linkedin_connect", "mailbox": linkedin, "variants": [{"body": "Hi {{ lead.first_name }}, following up my email."}]},
            {"kind": "task", "title": "Call {{ lead.first_name }}"},
        ],
    }));
    // Eve is enrolled, then taken out by hand before anything is sent.
    let eve = lead("eve");
    let (_, enrolled) = world.call(
        "POST",
        &format!("/sequences/{sequence}/enrollments"),
        Some(&json!({"leads": [eve]}).to_string()),
    );
    let eve_enrollment = enrolled["results"][0]["enrollment"].as_i64().unwrap();
    let (status, stopped) = world.call(
        "DELETE",
        &format!("/sequences/{sequence}/enrollments/{eve_enrollment}"),
        None,
    );
    assert_eq!(
        (status, &stopped["enrollment"]["status"]),
        (200, &json!("stopped")),
        "{stopped}"
    );
    world.enroll(sequence, &[ada, bea, cy, dan]);
    // Dan is in a second sequence too; his bounce stops both.
    let second = world.sequence(json!({"name": "Second", "steps": [
        {"kind": "wait", "business_days": 5},
        email_step(mailbox, "Again", "Hello again"),
    ]}));
    world.enroll(second, &[dan]);

    // Thursday 10:00: the four emails.
    world.runner.tick().unwrap();
    let mails: BTreeMap<String, Mail> = world
        .smtp
        .received()
        .iter()
        .map(|received| (received.rcpt_tos[0].clone(), parse(received)))
        .collect();
    assert_eq!(mails.len(), 4, "Eve gets nothing");
    assert_eq!(mails["bea@example.com"].subject, "Hello bea");
    // Tracking is off for this sequence: no tracked links, no pixel.
    let html = mails["bea@example.com"].html.clone().unwrap_or_default();
    assert!(!html.contains("/t/o/") && !html.contains("/t/c/"), "{html}");
    assert!(!mails["bea@example.com"].text.contains("/t/c/"));

    // Bea replies; Cy's out-of-office answers; Dan's address bounces.
    let replied = inbound(
        &world,
        &mails["bea@example.com"],
        "bea@example.com",
        "",
        "Sounds good, call me.",
    );
    assert_eq!(replied["stopped"], 1, "{replied}");
    let away = inbound(
        &world,
        &mails["cy@example.com"],
        "cy@example.com",
        "Auto-Submitted: auto-replied\r\n",
        "I am away until Monday.",
    );
    assert_eq!(
        (&away["recorded"], &away["stopped"]),
        (&json!(1), &json!(0)),
        "{away}"
    );
    let bounced = bounce(&world, &mails["dan@example.com"], "dan@example.com");
    assert_eq!(
        (&bounced["suppressed"], &bounced["stopped"]),
        (&json!(1), &json!(2)),
        "{bounced}"
    );
    let (_, dan_lead) = world.call("GET", &format!("/leads/{dan}"), None);
    assert_eq!(dan_lead["lead"]["do_not_contact"]["reason"], "bounced");
    assert_eq!(world.enrollments(second)[&dan].0, "stopped");

    // Friday and the weekend pass: the wait is two business days.
    world.run_until(at("2026-01-12T09:59:00Z"), Duration::from_secs(1800));
    assert!(world.linkedin.requests().is_empty());
    let (_, tasks) = world.call("GET", "/tasks", None);
    assert_eq!(tasks["tasks"], json!([]));
    // Monday 10:00: the connection requests, then at once the call tasks,
    // for Ada and Cy only.
    world.run_until(at("2026-01-12T10:00:00Z"), Duration::from_secs(60));
    let requests = world.linkedin.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(requests[1].path, "/v2/invitations");
    assert!(
        requests[1].body.contains("Hi ada, following up my email."),
        "{}",
        requests[1].body
    );
    assert!(requests[3].body.contains("Hi cy,"), "{}", requests[3].body);
    let (_, tasks) = world.call("GET", "/tasks", None);
    let titles: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["Call ada", "Call cy"]);
    assert_eq!(tasks["tasks"][0]["kind"], "call");
    let enrollments = world.enrollments(sequence);
    assert_eq!(enrollments[&ada].0, "completed");
    assert_eq!(enrollments[&cy].0, "completed");
    assert_eq!(
        enrollments[&bea],
        ("stopped".to_owned(), Some("replied".to_owned()))
    );
    assert_eq!(
        enrollments[&dan],
        ("stopped".to_owned(), Some("bounced".to_owned()))
    );
    // Four emails at 0.5 and two LinkedIn requests at 2.
    assert_eq!(world.balance(), "994");
}

#[test]
fn a_daily_cap_holds_over_every_rolling_24_hours() {
    let world = World::start(Setup {
        start: "2026-01-05T00:00:00Z",
        ..Setup::default()
    });
    let mailbox = world.mailbox("email", "sam@acme.example", Some(30));
    let sequence = world.sequence(json!({
        "name": "Capped",
        "tracking": false,
        "window": {"start": "00:00", "end": "24:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "steps": [email_step(mailbox, "Hi", "Hello {{ lead.email }}")],
    }));
    let leads: Vec<i64> = (0..100)
        .map(|n| world.lead(json!({"email": format!("lead{n}@example.com")})))
        .collect();
    world.enroll(sequence, &leads);
    // The scheduler ticks every 20 minutes for five days.
    world.run_until(at("2026-01-10T00:00:00Z"), Duration::from_secs(1200));
    assert_eq!(world.smtp.received().len(), 100);
    let mut conn = world.database.get().unwrap();
    use diesel::prelude::*;
    use tollgate::db::schema::step_runs;
    let mut sent: Vec<i64> = step_runs::table
        .filter(step_runs::status.eq("sent"))
        .select(step_runs::started_at)
        .load(&mut conn)
        .unwrap();
    sent.sort();
    assert_eq!(sent.len(), 100);
    const DAY: i64 = 86_400_000_000;
    for (index, start) in sent.iter().enumerate() {
        let in_window = sent[index..]
            .iter()
            .take_while(|at| **at < start + DAY)
            .count();
        assert!(
            in_window <= 30,
            "{in_window} sends in the 24 hours from {}",
            Timestamp::from_micros(*start)
        );
    }
    // 30 a day: the last goes out on the fourth day.
    let last = Timestamp::from_micros(*sent.last().unwrap());
    assert!(
        last >= at("2026-01-08T00:00:00Z") && last < at("2026-01-09T00:00:00Z"),
        "{last}"
    );
}

#[test]
fn a_lead_in_tokyo_gets_every_step_inside_its_window_in_tokyo_time() {
    // Friday 12:00 UTC is Friday 21:00 in Tokyo.
    let world = World::start(Setup {
        start: "2026-01-09T12:00:00Z",
        ..Setup::default()
    });
    let mailbox = world.mailbox("email", "sam@acme.example", None);
    let sequence = world.sequence(json!({
        "name": "Tokyo",
        "tracking": false,
        "time_zone": "Europe/London",
        "window": {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
        "steps": [
            email_step(mailbox, "One", "First"),
            {"kind": "wait", "business_days": 1},
            email_step(mailbox, "Two", "Second"),
            {"kind": "wait", "business_days": 2},
            email_step(mailbox, "Three", "Third"),
        ],
    }));
    let kenji = world.lead(json!({"email": "kenji@example.jp", "time_zone": "Asia/Tokyo"}));
    world.enroll(sequence, &[kenji]);
    world.run_until(at("2026-01-20T00:00:00Z"), Duration::from_secs(900));
    let received = world.smtp.received();
    assert_eq!(received.len(), 3);
    use chrono::{Datelike as _, Timelike as _};
    let tokyo: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
    let mut conn = world.database.get().unwrap();
    use diesel::prelude::*;
    use tollgate::db::schema::step_runs;
    let mut sent: Vec<i64> = step_runs::table
        .filter(step_runs::status.eq("sent"))
        .select(step_runs::started_at)
        .load(&mut conn)
        .unwrap();
    sent.sort();
    let local: Vec<String> = sent
        .iter()
        .map(|micros| {
            Timestamp::from_micros(*micros)
                .to_chrono()
                .with_timezone(&tokyo)
                .format("%a %H:%M")
                .to_string()
        })
        .collect();
    for micros in &sent {
        let time = Timestamp::from_micros(*micros)
            .to_chrono()
            .with_timezone(&tokyo);
        assert!(
            time.weekday().num_days_from_monday() < 5 && (9..17).contains(&time.hour()),
            "{local:?}"
        );
    }
    // Monday 09:00 (the first open moment), then one business day, then two.
    assert_eq!(local, vec!["Mon 09:00", "Tue 09:00", "Thu 09:00"]);
}

#[test]
fn a_tenant_out_of_credits_sends_nothing_and_is_told_why() {
    let world = World::start(Setup {
        credits: 0,
        ..Setup::default()
    });
    let mailbox = world.mailbox("email", "sam@acme.example", None);
    let sequence =
        world.sequence(json!({"name": "Broke", "steps": [email_step(mailbox, "Hi", "Hello")]}));
    let ada = world.lead(json!({"email": "ada@example.com"}));
    world.enroll(sequence, &[ada]);
    world.runner.tick().unwrap();
    assert!(world.smtp.received().is_empty());
    let (status, reason) = &world.enrollments(sequence)[&ada];
    assert_eq!(status, "active");
    let reason = reason.as_deref().unwrap();
    assert!(reason.contains("insufficient credits"), "{reason}");
    // A direct send through the API is refused with 402, and not sent.
    let body = json!({"plugin": "email", "recipient": "ada@example.com", "sender": {"address": "sam@acme.example"},
                      "text_body": "Hi", "headers": [], "references": [], "idempotency_key": "k1"});
    let (status, refused) = world.call("POST", "/messages", Some(&body.to_string()));
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (402, Some("insufficient_credits")),
        "{refused}"
    );
    assert!(world.smtp.received().is_empty());
}

#[test]
fn two_hosts_running_at_once_send_each_step_once() {
    let world = World::start(Setup::default());
    let mailbox = world.mailbox("email", "sam@acme.example", Some(1_000));
    let sequence = world.sequence(json!({
        "name": "Busy",
        "tracking": false,
        "steps": [
            email_step(mailbox, "One", "First"),
            email_step(mailbox, "Two", "Second"),
        ],
    }));
    let leads: Vec<i64> = (0..40)
        .map(|n| world.lead(json!({"email": format!("lead{n}@example.com")})))
        .collect();
    world.enroll(sequence, &leads);
    let second = tollgate::engagement::runner::Runner {
        database: world.runner.database.clone(),
        meter: world.runner.meter.clone(),
        clock: world.runner.clock.clone(),
        links: world.runner.links.clone(),
        owner: "host-b".into(),
    };
    // Both hosts tick over the same due enrollments at the same time.
    std::thread::scope(|scope| {
        let hosts = [&world.runner, &second];
        for host in hosts {
            scope.spawn(move || {
                for _ in 0..5 {
                    host.tick().unwrap();
                }
            });
        }
    });
    let received = world.smtp.received();
    assert_eq!(received.len(), 80);
    let mut sent: Vec<(String, String)> = received
        .iter()
        .map(|message| (message.rcpt_tos[0].clone(), parse(message).subject))
        .collect();
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 80, "a step went out twice");
    // 80 emails at 0.5 credits, charged once each.
    assert_eq!(world.balance(), "960");
}

#[test]
fn a_condition_branches_on_opens_and_variants_report_their_results() {
    let world = World::start(Setup::default());
    let mailbox = world.mailbox("email", "sam@acme.example", None);
    let sequence = world.sequence(json!({
        "name": "A/B",
        "steps": [
            {"kind": "email", "mailbox": mailbox, "variants": [
                {"subject": "Variant A", "body": "Short"},
                {"subject": "Variant B", "body": "Long"},
            ]},
            {"kind": "wait", "business_days": 1},
            {"kind": "condition", "if": {"engaged": "opened"}, "else": "end"},
            {"kind": "task", "title": "Call {{ lead.email }}"},
        ],
    }));
    let leads: Vec<i64> = (0..12)
        .map(|n| world.lead(json!({"email": format!("lead{n}@example.com")})))
        .collect();
    world.enroll(sequence, &leads);
    world.runner.tick().unwrap();
    let mails: Vec<Mail> = world.smtp.received().iter().map(parse).collect();
    assert_eq!(mails.len(), 12);
    let subjects: std::collections::BTreeSet<&str> =
        mails.iter().map(|mail| mail.subject.as_str()).collect();
    assert_eq!(subjects.len(), 2, "both variants went out");
    // Three leads open their email.
    let mut opened: Vec<String> = Vec::new();
    for mail in &mails[..3] {
        let pixel = link(mail.html.as_deref().unwrap(), "https://tollgate.test/t/o/");
        assert_eq!(world.follow("GET", &pixel, "text/plain", "").0, 200);
        // Opening again counts once.
        world.follow("GET", &pixel, "text/plain", "");
        opened.push(mail.to[0].clone());
    }
    // A business day later the condition sends the openers to the call task.
    world.run_until(at("2026-01-09T10:00:00Z"), Duration::from_secs(3600));
    let (_, tasks) = world.call("GET", "/tasks", None);
    let mut called: Vec<String> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| {
            task["title"]
                .as_str()
                .unwrap()
                .trim_start_matches("Call ")
                .to_owned()
        })
        .collect();
    called.sort();
    opened.sort();
    assert_eq!(called, opened);
    assert!(
        world
            .enrollments(sequence)
            .values()
            .all(|(status, _)| status == "completed")
    );
    // Results per variant: twelve sent between them, three opened.
    let (_, detail) = world.call("GET", &format!("/sequences/{sequence}"), None);
    let first_step = detail["sequence"]["steps"][0]["id"].clone();
    let variants: Vec<&serde_json::Value> = detail["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|result| result["step"] == first_step)
        .collect();
    assert_eq!(variants.len(), 2, "{detail}");
    let sent: i64 = variants
        .iter()
        .map(|result| result["runs"]["sent"].as_i64().unwrap())
        .sum();
    let opens: i64 = variants
        .iter()
        .map(|result| result["opened"].as_i64().unwrap())
        .sum();
    assert_eq!((sent, opens), (12, 3));
}

#[test]
fn an_hourly_cap_holds_over_every_rolling_hour() {
    let world = World::start(Setup {
        start: "2026-01-05T00:00:00Z",
        ..Setup::default()
    });
    let body = json!({"plugin": "email", "address": "sam@acme.example", "hourly_cap": 2});
    let (status, created) = world.call("POST", "/mailboxes", Some(&body.to_string()));
    assert_eq!(status, 201, "{created}");
    let mailbox = created["mailbox"]["id"].as_i64().unwrap();
    let sequence = world.sequence(json!({
        "name": "Hourly",
        "tracking": false,
        "window": {"start": "00:00", "end": "24:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "steps": [email_step(mailbox, "Hi", "Hello")],
    }));
    let leads: Vec<i64> = (0..7)
        .map(|n| world.lead(json!({"email": format!("lead{n}@example.com")})))
        .collect();
    world.enroll(sequence, &leads);
    world.run_until(at("2026-01-05T05:00:00Z"), Duration::from_secs(600));
    assert_eq!(world.smtp.received().len(), 7);
    let mut conn = world.database.get().unwrap();
    use diesel::prelude::*;
    use tollgate::db::schema::step_runs;
    let mut sent: Vec<i64> = step_runs::table
        .filter(step_runs::status.eq("sent"))
        .select(step_runs::started_at)
        .load(&mut conn)
        .unwrap();
    sent.sort();
    const HOUR: i64 = 3_600_000_000;
    for (index, start) in sent.iter().enumerate() {
        let in_hour = sent[index..]
            .iter()
            .take_while(|at| **at < start + HOUR)
            .count();
        assert!(
            in_hour <= 2,
            "{in_hour} sends in the hour from {}",
            Timestamp::from_micros(*start)
        );
    }
    // Two an hour: the seventh goes out in the fourth hour.
    let last = Timestamp::from_micros(*sent.last().unwrap());
    assert!(
        last >= at("2026-01-05T03:00:00Z") && last < at("2026-01-05T04:00:00Z"),
        "{last}"
    );
}
