use super::*;
use crate::billing::invoices::{Line, Totals};
use crate::units::Timestamp;

/// 2026-11-24T12:00:00Z.
const ISSUED: Timestamp = Timestamp::from_micros(1_795_521_600_000_000);

fn document(lines: Vec<Line>) -> Document {
    let subtotal: i64 = lines.iter().map(|line| line.amount_minor).sum();
    // 20%, half up (the fixtures' subtotals are positive).
    let tax = (subtotal * 20 + 50) / 100;
    Document {
        id: 7,
        tenant: 1,
        kind: Kind::Invoice,
        issuer: "Tollgate".into(),
        number: Some(42),
        state: State::Paid,
        currency: "USD".into(),
        totals: Totals {
            subtotal_minor: subtotal,
            tax_minor: tax,
            total_minor: subtotal + tax,
        },
        tax_rate: "0.2".parse().unwrap(),
        tax_name: "VAT".into(),
        credits_invoice: None,
        lines,
        created_at: ISSUED,
        finalized_at: Some(ISSUED),
        closed_at: Some(ISSUED),
        reseller: None,
    }
}

fn line(description: &str, quantity: i64, unit_price_minor: i64) -> Line {
    Line {
        description: description.into(),
        quantity,
        unit_price_minor,
        amount_minor: quantity * unit_price_minor,
    }
}

fn parties() -> Parties<'static> {
    Parties {
        issuer_address: "1 Main Street\nSpringfield",
        customer: "Acme Café",
        credited_number: None,
    }
}

/// The text `pdftotext` (Debian's poppler-utils, which `scripts/test`
/// installs) extracts from `pdf`, laid out as on the page.
fn pdftotext(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("invoice.pdf");
    std::fs::write(&path, pdf).unwrap();
    let output = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .unwrap_or_else(|error| {
            panic!("running pdftotext: {error}; install poppler-utils (scripts/test does)")
        });
    assert!(
        output.status.success(),
        "pdftotext refused the file: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn amounts_are_printed_exactly_with_grouped_thousands() {
    assert_eq!(format_minor(123_456, 2), "1,234.56");
    assert_eq!(format_minor(-5, 2), "-0.05");
    assert_eq!(format_minor(0, 2), "0.00");
    assert_eq!(format_minor(1_234_567_890, 2), "12,345,678.90");
    assert_eq!(format_minor(-100_000, 2), "-1,000.00");
    assert_eq!(format_minor(1_234, 0), "1,234");
    assert_eq!(format_minor(1_234_567, 3), "1,234.567");
}

#[test]
fn the_sheet_says_what_the_document_says() {
    let sheet = Sheet::new(
        &document(vec![
            line("Starter plan", 1, 4_900),
            line("Seats", 1_200, 1_999),
        ]),
        &parties(),
    );
    assert_eq!(
        (
            sheet.kind,
            sheet.number.as_str(),
            sheet.state,
            sheet.date.as_str()
        ),
        ("Invoice", "INV-000042", "Paid", "2026-11-24")
    );
    assert_eq!(sheet.issuer_address, ["1 Main Street", "Springfield"]);
    assert_eq!(sheet.lines[1].quantity, "1,200");
    assert_eq!(sheet.lines[1].amount, "23,988.00");
    assert_eq!(
        (
            sheet.subtotal.as_str(),
            sheet.tax_label.as_str(),
            sheet.tax.as_str(),
            sheet.total.as_str()
        ),
        ("24,037.00", "VAT 20%", "4,807.40", "28,844.40")
    );
}

#[test]
fn the_html_shows_every_line_and_total_and_escapes_what_it_is_given() {
    let sheet = Sheet::new(
        &document(vec![
            line("Starter plan, November", 1, 4_900),
            line("<script>alert(1)</script>", 2, 100),
        ]),
        &parties(),
    );
    let page = html(&sheet).unwrap();
    for expected in [
        "INV-000042",
        "Starter plan, November",
        "Acme Café",
        "Subtotal (USD)",
        "51.00",
        "VAT 20% (USD)",
        "10.20",
        "61.20",
        "rounded half away from zero",
    ] {
        assert!(page.contains(expected), "{expected:?} missing from\n{page}");
    }
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");
}

#[test]
fn the_pdf_is_a_pdf_whose_text_a_reader_extracts() {
    let long = "Lead searches through csv-leads for the whole of November, \
                charged per lead returned under the graduated tiers of the Professional plan";
    let sheet = Sheet::new(
        &document(vec![
            line("Professional plan, November 2026", 1, 14_900),
            line("Unused time on Starter", 1, -2_450),
            line(long, 3, 1_999),
        ]),
        &parties(),
    );
    let pdf = pdf(&sheet);
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdftotext(&pdf);
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "Tollgate",
        "1 Main Street",
        "Invoice",
        "Number INV-000042",
        "Date 2026-11-24",
        "Status Paid",
        "Bill to",
        // Windows-1252 carries é.
        "Acme Café",
        "Professional plan, November 2026",
        "149.00",
        "Unused time on Starter",
        "-24.50",
        "59.97",
        "Subtotal (USD) 184.47",
        "VAT 20% (USD) 36.89",
        "Total (USD) 221.36",
        "rounded half away from zero",
        "Page 1",
    ] {
        assert!(
            squeezed.contains(expected),
            "{expected:?} missing from\n{text}"
        );
    }
    // The long description wrapped onto lines of its own, all of it there.
    for word in long.split_whitespace() {
        assert!(squeezed.contains(word), "{word:?} missing from\n{text}");
    }
    assert!(
        text.lines()
            .all(|line| !line.contains("November, charged per lead returned under the graduated")),
        "the description did not wrap:\n{text}"
    );
}

#[test]
fn many_lines_continue_on_further_pages() {
    let lines: Vec<Line> = (1..=100)
        .map(|index| line(&format!("Seat {index:03}"), 1, 1_000))
        .collect();
    let sheet = Sheet::new(&document(lines), &parties());
    let text = pdftotext(&pdf(&sheet));
    for index in 1..=100 {
        let seat = format!("Seat {index:03}");
        assert_eq!(text.matches(&seat).count(), 1, "{seat} in\n{text}");
    }
    assert!(text.contains("Page 2"), "{text}");
    assert!(text.contains("Invoice INV-000042 (continued)"), "{text}");
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(squeezed.contains("Total (USD) 1,200.00"), "{text}");
}

#[test]
fn text_outside_windows_1252_prints_as_question_marks() {
    assert_eq!(win_ansi("Café €5 – ok"), b"Caf\xe9 \x805 \x96 ok");
    assert_eq!(win_ansi("東京"), b"??");
}

#[test]
fn wrapping_keeps_every_line_within_its_width() {
    let text =
        "a few short words and one extraordinarilylongwordthatcannotfitonalineofitsown at all";
    let lines = wrap(text, 10.0, 100.0);
    assert!(lines.len() > 2, "{lines:?}");
    for line in &lines {
        assert!(text_width(line, 10.0) <= 100.0, "{line:?}");
    }
    assert_eq!(
        lines.concat().replace(' ', ""),
        text.replace(' ', ""),
        "nothing lost"
    );
    assert_eq!(wrap("", 10.0, 100.0), [""]);
}
