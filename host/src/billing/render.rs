//! Invoices and credit notes as HTML (a minijinja template) and as PDF
//! (pdf-writer, set in the standard Helvetica faces, so the file needs no
//! embedded font and any reader shows and extracts its text). Both show the
//! same [`Sheet`]: what the document says, formatted once.
//!
//! PDF text is encoded in Windows-1252, the standard faces' encoding: a
//! character outside it (most of Unicode beyond Western European scripts)
//! prints as `?`. The HTML shows every character.

use minijinja::{Environment, context};
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
use serde::Serialize;

use super::invoices::{Document, Kind, State};
use crate::units::Currency;

const TEMPLATE: &str = include_str!("invoice.html");

/// Who the document is between, beyond what it stores itself.
#[derive(Clone, Debug, Default)]
pub struct Parties<'a> {
    /// The issuer's address as printed, lines separated by newlines.
    pub issuer_address: &'a str,
    /// The tenant billed.
    pub customer: &'a str,
    /// For a credit note, the printed number of the invoice it credits.
    pub credited_number: Option<&'a str>,
}

/// What a document says, formatted for reading.
#[derive(Clone, Debug, Serialize)]
pub struct Sheet {
    /// "Invoice" or "Credit note".
    pub kind: &'static str,
    /// "INV-000042", or "Draft" before it is issued.
    pub number: String,
    pub state: &'static str,
    /// The day it was issued (UTC), or created for a draft.
    pub date: String,
    pub issuer: String,
    pub issuer_address: Vec<String>,
    pub customer: String,
    pub credited_number: Option<String>,
    /// For a receipt: what was paid, how, and the provider's reference.
    pub notes: Vec<String>,
    pub currency: String,
    pub lines: Vec<SheetLine>,
    pub subtotal: String,
    /// "VAT 20%".
    pub tax_label: String,
    pub tax: String,
    pub total: String,
    /// How the sums were rounded.
    pub rounding: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct SheetLine {
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}

pub const ROUNDING: &str = "Amounts are exact to the cent; tax is computed once on the subtotal \
     and rounded half away from zero to the cent.";

impl Sheet {
    pub fn new(document: &Document, parties: &Parties<'_>) -> Sheet {
        let digits = Currency::parse(&document.currency)
            .map(|currency| currency.minor_digits())
            .unwrap_or(2);
        let money = |minor: i64| format_minor(minor, digits);
        let date = document.finalized_at.unwrap_or(document.created_at);
        let percent = (document.tax_rate * rust_decimal::Decimal::ONE_HUNDRED).normalize();
        Sheet {
            kind: match document.kind {
                Kind::Invoice => "Invoice",
                Kind::CreditNote => "Credit note",
            },
            number: document
                .display_number()
                .unwrap_or_else(|| "Draft".to_owned()),
            state: match document.state {
                State::Draft => "Draft",
                State::Open => "Open",
                State::Paid => "Paid",
                State::Void => "Void",
                State::Uncollectible => "Uncollectible",
            },
            date: date.to_chrono().format("%Y-%m-%d").to_string(),
            issuer: document.issuer.clone(),
            issuer_address: parties
                .issuer_address
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect(),
            customer: parties.customer.to_owned(),
            credited_number: parties.credited_number.map(str::to_owned),
            notes: Vec::new(),
            currency: document.currency.clone(),
            lines: document
                .lines
                .iter()
                .map(|line| SheetLine {
                    description: line.description.clone(),
                    quantity: group_thousands(&line.quantity.to_string()),
                    unit_price: money(line.unit_price_minor),
                    amount: money(line.amount_minor),
                })
                .collect(),
            subtotal: money(document.totals.subtotal_minor),
            tax_label: format!("{} {percent}%", document.tax_name),
            tax: money(document.totals.tax_minor),
            total: money(document.totals.total_minor),
            rounding: ROUNDING,
        }
    }
}

/// What a receipt says of the payment it acknowledges.
#[derive(Clone, Debug)]
pub struct Paid<'a> {
    /// The payment's id: the receipt is numbered `RCT-000012` after it.
    pub payment: i64,
    pub paid_at: crate::units::Timestamp,
    /// How it was paid: the payment method's label.
    pub method: &'a str,
    pub provider_reference: Option<&'a str>,
}

impl Sheet {
    /// A receipt for the payment of `invoice`: its lines and totals, and
    /// what paid it.
    pub fn receipt(invoice: &Document, paid: &Paid<'_>, parties: &Parties<'_>) -> Sheet {
        let mut sheet = Sheet::new(invoice, parties);
        sheet.notes = [
            Some(format!("For invoice {}", sheet.number)),
            Some(format!("Paid with {}", paid.method)),
            paid.provider_reference
                .map(|reference| format!("Reference {reference}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        sheet.kind = "Receipt";
        sheet.number = format!("RCT-{:06}", paid.payment);
        sheet.state = "Paid";
        sheet.date = paid.paid_at.to_chrono().format("%Y-%m-%d").to_string();
        sheet
    }
}

/// The sheet of `document` as its tenant reads it: the tenant's name, the
/// number of the invoice a credit note credits, and its issuer's address
/// (a reseller's, from its brand, for a document it issued).
pub fn sheet_of(
    conn: &mut crate::db::DbConnection,
    document: &Document,
    platform: &super::invoices::Issuer,
) -> anyhow::Result<Sheet> {
    let tenant = crate::ids::TenantId(document.tenant);
    let customer = crate::tenants::find(conn, tenant)?.name;
    let credited = match document.credits_invoice {
        Some(invoice) => super::invoices::get(conn, tenant, invoice)?.display_number(),
        None => None,
    };
    let address = crate::branding::issuer_address(conn, document, platform)?;
    Ok(Sheet::new(
        document,
        &Parties {
            issuer_address: &address,
            customer: &customer,
            credited_number: credited.as_deref(),
        },
    ))
}

/// `123456` minor units with 2 digits: `1,234.56`.
pub fn format_minor(minor: i64, digits: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    let scale = 10_u64.pow(digits);
    let whole = group_thousands(&(magnitude / scale).to_string());
    match digits {
        0 => format!("{sign}{whole}"),
        _ => format!(
            "{sign}{whole}.{:0width$}",
            magnitude % scale,
            width = digits as usize
        ),
    }
}

fn group_thousands(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}")
}

/// The document as a standalone HTML page.
pub fn html(sheet: &Sheet) -> Result<String, minijinja::Error> {
    let mut environment = Environment::new();
    environment.add_template("invoice.html", TEMPLATE)?;
    environment
        .get_template("invoice.html")?
        .render(context! { sheet => minijinja::value::Serde(sheet) })
}

/// A4, in points.
const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
/// Where the columns of the lines end (amounts are right-aligned).
const QUANTITY_RIGHT: f32 = 360.0;
const UNIT_PRICE_RIGHT: f32 = 450.0;
const AMOUNT_RIGHT: f32 = PAGE_WIDTH - MARGIN;
/// How wide a description may run before it wraps.
const DESCRIPTION_WIDTH: f32 = 250.0;
const BODY_SIZE: f32 = 10.0;
const LEADING: f32 = 14.0;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// The document as a PDF file: A4 pages, the lines continuing onto as many
/// pages as they need, the totals after the last.
pub fn pdf(sheet: &Sheet) -> Vec<u8> {
    let mut pages: Vec<Content> = Vec::new();
    let mut page = Page::new();
    page.header(sheet);
    page.table_header();
    for line in &sheet.lines {
        let wrapped = wrap(&line.description, BODY_SIZE, DESCRIPTION_WIDTH);
        let height = LEADING * wrapped.len() as f32;
        if page.y - height < MARGIN + 30.0 {
            pages.push(page.finish(pages.len() + 1));
            page = Page::new();
            page.text(
                REGULAR,
                BODY_SIZE,
                MARGIN,
                &format!("{} {} (continued)", sheet.kind, sheet.number),
            );
            page.y -= LEADING * 2.0;
            page.table_header();
        }
        page.text_right(REGULAR, BODY_SIZE, QUANTITY_RIGHT, &line.quantity);
        page.text_right(REGULAR, BODY_SIZE, UNIT_PRICE_RIGHT, &line.unit_price);
        page.text_right(REGULAR, BODY_SIZE, AMOUNT_RIGHT, &line.amount);
        for part in &wrapped {
            page.text(REGULAR, BODY_SIZE, MARGIN, part);
            page.y -= LEADING;
        }
    }
    if page.y < MARGIN + 110.0 {
        pages.push(page.finish(pages.len() + 1));
        page = Page::new();
    }
    page.rule();
    for (label, amount, font) in [
        ("Subtotal", &sheet.subtotal, REGULAR),
        (sheet.tax_label.as_str(), &sheet.tax, REGULAR),
        ("Total", &sheet.total, BOLD),
    ] {
        page.text_right(
            font,
            BODY_SIZE,
            UNIT_PRICE_RIGHT,
            &format!("{label} ({})", sheet.currency),
        );
        page.text_right(font, BODY_SIZE, AMOUNT_RIGHT, amount);
        page.y -= LEADING;
    }
    page.y -= LEADING;
    page.text(REGULAR, 8.0, MARGIN, sheet.rounding);
    pages.push(page.finish(pages.len() + 1));

    // Objects: 1 catalog, 2 page tree, 3 and 4 the fonts, then a page and
    // its content stream for each page.
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let (regular, bold) = (Ref::new(3), Ref::new(4));
    let page_ids: Vec<Ref> = (0..pages.len())
        .map(|index| Ref::new(5 + 2 * index as i32))
        .collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(pages.len() as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    for (content, id) in pages.into_iter().zip(&page_ids) {
        let content_id = Ref::new(id.get() + 1);
        let mut page = pdf.page(*id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        let mut fonts = resources.fonts();
        fonts.pair(REGULAR, regular);
        fonts.pair(BOLD, bold);
        drop(fonts);
        drop(resources);
        drop(page);
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

/// One page being written, top down.
struct Page {
    content: Content,
    y: f32,
}

impl Page {
    fn new() -> Page {
        Page {
            content: Content::new(),
            y: PAGE_HEIGHT - MARGIN,
        }
    }

    fn header(&mut self, sheet: &Sheet) {
        let top = self.y;
        self.text(BOLD, 16.0, MARGIN, &sheet.issuer);
        self.y -= 18.0;
        for line in &sheet.issuer_address {
            self.text(REGULAR, BODY_SIZE, MARGIN, line);
            self.y -= LEADING;
        }
        let left_bottom = self.y;
        self.y = top;
        self.text_right(BOLD, 18.0, AMOUNT_RIGHT, sheet.kind);
        self.y -= 22.0;
        let credited = sheet
            .credited_number
            .as_ref()
            .map(|number| format!("Credits invoice {number}"));
        for line in [
            Some(format!("Number {}", sheet.number)),
            Some(format!("Date {}", sheet.date)),
            Some(format!("Status {}", sheet.state)),
            credited,
        ]
        .into_iter()
        .flatten()
        .chain(sheet.notes.iter().cloned())
        {
            self.text_right(REGULAR, BODY_SIZE, AMOUNT_RIGHT, &line);
            self.y -= LEADING;
        }
        self.y = self.y.min(left_bottom) - LEADING;
        self.text(BOLD, BODY_SIZE, MARGIN, "Bill to");
        self.y -= LEADING;
        self.text(REGULAR, BODY_SIZE, MARGIN, &sheet.customer);
        self.y -= LEADING * 2.0;
    }

    fn table_header(&mut self) {
        self.text(BOLD, BODY_SIZE, MARGIN, "Description");
        self.text_right(BOLD, BODY_SIZE, QUANTITY_RIGHT, "Quantity");
        self.text_right(BOLD, BODY_SIZE, UNIT_PRICE_RIGHT, "Unit price");
        self.text_right(BOLD, BODY_SIZE, AMOUNT_RIGHT, "Amount");
        self.y -= 6.0;
        self.rule();
    }

    fn rule(&mut self) {
        self.content
            .set_line_width(0.5)
            .move_to(MARGIN, self.y)
            .line_to(AMOUNT_RIGHT, self.y)
            .stroke();
        self.y -= LEADING;
    }

    fn text(&mut self, font: Name<'_>, size: f32, x: f32, text: &str) {
        self.content
            .begin_text()
            .set_font(font, size)
            .next_line(x, self.y)
            .show(Str(&win_ansi(text)))
            .end_text();
    }

    fn text_right(&mut self, font: Name<'_>, size: f32, right: f32, text: &str) {
        let x = right - text_width(text, size);
        self.text(font, size, x, text);
    }

    fn finish(mut self, number: usize) -> Content {
        self.y = MARGIN - 20.0;
        self.text(REGULAR, 8.0, MARGIN, &format!("Page {number}"));
        self.content
    }
}

/// Text as Windows-1252 bytes; what it cannot encode becomes `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c as u32 {
            0x20..=0x7E | 0xA0..=0xFF => c as u32 as u8,
            _ => match c {
                '€' => 0x80,
                '…' => 0x85,
                '‘' => 0x91,
                '’' => 0x92,
                '“' => 0x93,
                '”' => 0x94,
                '•' => 0x95,
                '–' => 0x96,
                '—' => 0x97,
                '\t' => b' ',
                _ => b'?',
            },
        })
        .collect()
}

/// Helvetica's advance widths (per 1,000 units of size) for printable
/// ASCII, from its AFM metrics; other characters count as a digit.
const HELVETICA_WIDTHS: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278,
    278, // space to /
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, // 0 to 9
    278, 278, 584, 584, 584, 556, 1015, // : to @
    667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, // A to M
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, // N to Z
    278, 278, 278, 469, 556, 333, // [ to `
    556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, // a to m
    556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, // n to z
    334, 260, 334, 584, // { to ~
];

/// How wide `text` is set in Helvetica at `size`, in points. Bold digits,
/// separators and signs have the same widths, which is what the
/// right-aligned columns hold.
fn text_width(text: &str, size: f32) -> f32 {
    let units: u32 = text
        .chars()
        .map(|c| match c as u32 {
            code @ 0x20..=0x7E => u32::from(HELVETICA_WIDTHS[(code - 0x20) as usize]),
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Splits `text` into lines no wider than `width` at `size`, at spaces
/// where it can and anywhere when a word alone is too wide.
fn wrap(text: &str, size: f32, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = match line.is_empty() {
            true => word.to_owned(),
            false => format!("{line} {word}"),
        };
        if text_width(&candidate, size) <= width {
            line = candidate;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        // A word wider than a line is cut where it must be.
        let mut rest = String::new();
        for c in word.chars() {
            rest.push(c);
            if text_width(&rest, size) > width {
                rest.pop();
                lines.push(std::mem::take(&mut rest));
                rest.push(c);
            }
        }
        line = rest;
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests;
