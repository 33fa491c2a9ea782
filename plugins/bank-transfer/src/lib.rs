//! `bank-transfer`: a payment provider with no outside call. Creating a
//! payment answers `pending` with a reference derived from the idempotency
//! key (so a retry gets the same reference) and the instructions the
//! customer needs. A confirmation arrives as a callback signed with the
//! tenant's `callback_secret`: the body is `application/x-www-form-urlencoded`
//! with `event_id`, `reference`, `status` (`succeeded`, `failed` or
//! `refunded`), and optionally `amount_minor`, `currency` and `reason`; the
//! `X-Tollgate-Signature` header is the hex HMAC-SHA256 of the body.

use hmac::{Hmac, Mac};
use tollgate_plugin_sdk::{
    Callback, ErrorKind, Method, Payment, PaymentEvent, PaymentEventKind, PaymentEvents,
    PaymentProvider, PaymentRequest, PaymentStatus, PluginError, Refund, RefundRequest, host,
    register_plugin,
};

struct BankTransfer;

const SIGNATURE_HEADER: &str = "x-tollgate-signature";

/// A confirmation longer than this is not one.
const CALLBACK_BYTES_MAX: usize = 16 << 10;

/// A short, stable reference from an idempotency key (FNV-1a, 64 bits).
fn reference(prefix: &str, key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{:010X}", hash >> 24)
}

fn money(amount_minor: u64, currency: &str) -> String {
    format!(
        "{}.{:02} {currency}",
        amount_minor / 100,
        amount_minor % 100
    )
}

impl PaymentProvider for BankTransfer {
    fn create_payment(request: PaymentRequest) -> Result<Payment, PluginError> {
        let other = match request.method {
            Method::BankTransfer => None,
            Method::Card => Some("card"),
            Method::Paypal => Some("paypal"),
        };
        if let Some(other) = other {
            return Err(PluginError::invalid_input(format!(
                "bank-transfer takes bank transfers only, not {other}"
            )));
        }
        if request.amount_minor == 0 {
            return Err(PluginError::invalid_input(
                "amount must be greater than zero",
            ));
        }
        let account_name = host::required_setting("account_name")?;
        let iban = host::required_setting("iban")?;
        let bic = host::required_setting("bic")?;
        let reference = reference("BT", &request.idempotency_key);
        let instructions = format!(
            "Transfer {} to {account_name}, IBAN {iban}, BIC {bic}, quoting the reference {reference}.",
            money(request.amount_minor, &request.currency)
        );
        Ok(Payment {
            provider_reference: reference,
            status: PaymentStatus::Pending,
            failure_reason: None,
            instructions: Some(instructions),
            units: 1,
        })
    }

    fn refund(request: RefundRequest) -> Result<Refund, PluginError> {
        if request.amount_minor == 0 {
            return Err(PluginError::invalid_input(
                "amount must be greater than zero",
            ));
        }
        // The operator sends the money back by hand; it stays pending until
        // confirmed like a payment.
        Ok(Refund {
            provider_reference: reference("BTR", &request.idempotency_key),
            status: PaymentStatus::Pending,
            units: 1,
        })
    }

    fn parse_callback(callback: Callback) -> Result<PaymentEvents, PluginError> {
        if callback.body.len() > CALLBACK_BYTES_MAX {
            return Err(PluginError::invalid_input("confirmation body is too large"));
        }
        verify_signature(&callback)?;
        let body = std::str::from_utf8(&callback.body)
            .map_err(|_| PluginError::invalid_input("confirmation body is not UTF-8"))?;
        let field = |name: &str| -> Option<String> {
            body.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == name).then(|| value.replace('+', " "))
            })
        };
        let required = |name: &str| {
            field(name)
                .ok_or_else(|| PluginError::invalid_input(format!("confirmation has no {name}")))
        };
        let kind = match required("status")?.as_str() {
            "succeeded" => PaymentEventKind::Succeeded,
            "failed" => PaymentEventKind::Failed,
            "refunded" => PaymentEventKind::Refunded,
            other => {
                return Err(PluginError::invalid_input(format!(
                    "unknown status {other:?}"
                )));
            }
        };
        let amount_minor = match field("amount_minor") {
            Some(text) => Some(text.parse().map_err(|_| {
                PluginError::invalid_input(format!("amount_minor {text:?} is not a whole number"))
            })?),
            None => None,
        };
        Ok(PaymentEvents {
            events: vec![PaymentEvent {
                kind,
                provider_reference: required("reference")?,
                amount_minor,
                currency: field("currency"),
                failure_reason: field("reason"),
                event_id: required("event_id")?,
            }],
            units: 0,
        })
    }
}

fn verify_signature(callback: &Callback) -> Result<(), PluginError> {
    let unauthorized = |message: &str| PluginError::new(ErrorKind::Unauthorized, message);
    let secret = host::required_setting("callback_secret")?;
    let signature = callback
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(SIGNATURE_HEADER))
        .ok_or_else(|| unauthorized("the confirmation is not signed"))?;
    let signature = hex::decode(signature.value.trim())
        .map_err(|_| unauthorized("the signature is not hex"))?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(&callback.body);
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("the signature does not match the body"))
}

register_plugin!(BankTransfer);
