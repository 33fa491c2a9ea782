//! `card`: card payments through a Stripe-style API. A payment is a
//! payment intent created and confirmed in one request with the saved card's
//! token; the gateway's answer maps to succeeded, pending (the issuer wants
//! authentication, or the charge is still processing) or failed (declined).
//! Server errors and rate limits are retryable upstream errors. Webhooks are
//! verified like Stripe's: `Stripe-Signature: t=<unix>,v1=<hex>` where the
//! hex is HMAC-SHA256 of `<t>.<body>` under the webhook secret, at most five
//! minutes old.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use tollgate_plugin_sdk::{
    Callback, ErrorKind, Field, Method, Payment, PaymentEvent, PaymentEventKind, PaymentEvents,
    PaymentProvider, PaymentRequest, PaymentStatus, PluginError, Refund, RefundRequest, host,
    register_plugin,
};

struct Card;

const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// How old a signed webhook may be, against replays.
const WEBHOOK_TOLERANCE_SECONDS: u64 = 300;

/// A webhook larger than this is not one.
const WEBHOOK_BYTES_MAX: usize = 256 << 10;

#[derive(Deserialize)]
struct Intent {
    id: String,
    status: String,
    last_payment_error: Option<GatewayError>,
}

#[derive(Deserialize)]
struct GatewayError {
    message: Option<String>,
    code: Option<String>,
    payment_intent: Option<Box<IntentRef>>,
}

#[derive(Deserialize)]
struct IntentRef {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GatewayError,
}

#[derive(Deserialize)]
struct RefundBody {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Deserialize)]
struct EventObject {
    id: String,
    amount: Option<u64>,
    currency: Option<String>,
    payment_intent: Option<String>,
    last_payment_error: Option<GatewayError>,
}

/// Percent-encodes a form value.
fn form_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// POSTs a form to the gateway; returns the status and the body.
fn post(
    path: &str,
    form: &[(&str, String)],
    idempotency_key: &str,
) -> Result<(u16, Vec<u8>), PluginError> {
    let secret_key = host::required_setting("secret_key")?;
    let base = host::setting("api_base_url").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let body: Vec<String> = form
        .iter()
        .map(|(name, value)| format!("{name}={}", form_value(value)))
        .collect();
    let request = host::HttpRequest {
        method: "POST".into(),
        url: format!("{}{path}", base.trim_end_matches('/')),
        headers: vec![
            Field {
                name: "authorization".into(),
                value: format!("Bearer {secret_key}"),
            },
            Field {
                name: "content-type".into(),
                value: "application/x-www-form-urlencoded".into(),
            },
            Field {
                name: "idempotency-key".into(),
                value: idempotency_key.to_owned(),
            },
        ],
        body: body.join("&").into_bytes(),
    };
    let response = host::http_send(&request)?;
    match response.status {
        401 | 403 => Err(PluginError::new(
            ErrorKind::Unauthorized,
            "the gateway refused the secret_key",
        )),
        429 => Err(PluginError::new(
            ErrorKind::RateLimited,
            "the gateway asks to slow down",
        )),
        500..=599 => Err(PluginError::upstream(format!(
            "the gateway failed ({}); retry with the same key",
            response.status
        ))),
        status => Ok((status, response.body)),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(body).map_err(|error| {
        PluginError::upstream(format!(
            "the gateway answered with unexpected JSON: {error}"
        ))
    })
}

fn describe(error: &GatewayError) -> String {
    match (&error.code, &error.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        (None, Some(message)) => message.clone(),
        (None, None) => "declined".into(),
    }
}

impl PaymentProvider for Card {
    fn create_payment(request: PaymentRequest) -> Result<Payment, PluginError> {
        if request.method != Method::Card {
            return Err(PluginError::invalid_input(
                "the card provider takes card payments only",
            ));
        }
        let token = request.payment_method_token.clone().ok_or_else(|| {
            PluginError::invalid_input("a card payment needs a saved card's token")
        })?;
        let form = [
            ("amount", request.amount_minor.to_string()),
            ("currency", request.currency.to_lowercase()),
            ("customer", request.customer_reference.clone()),
            ("payment_method", token),
            ("description", request.description.clone()),
            ("confirm", "true".to_owned()),
        ];
        let (status, body) = post("/v1/payment_intents", &form, &request.idempotency_key)?;
        if status == 402 {
            // A decline: the gateway made an intent and refused the card.
            let error = parse::<ErrorBody>(&body)?.error;
            let reference = error
                .payment_intent
                .as_ref()
                .map(|intent| intent.id.clone())
                .unwrap_or_default();
            return Ok(Payment {
                provider_reference: reference,
                status: PaymentStatus::Failed,
                failure_reason: Some(describe(&error)),
                instructions: None,
                units: 1,
            });
        }
        if !(200..300).contains(&status) {
            return Err(PluginError::invalid_input(format!(
                "the gateway refused the payment ({status}): {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let intent: Intent = parse(&body)?;
        let (status, instructions) = match intent.status.as_str() {
            "succeeded" => (PaymentStatus::Succeeded, None),
            "processing" => (PaymentStatus::Pending, None),
            "requires_action" => (
                PaymentStatus::Pending,
                Some("the card's issuer asks the customer to authenticate the payment".to_owned()),
            ),
            _ => (PaymentStatus::Failed, None),
        };
        Ok(Payment {
            failure_reason: match status {
                PaymentStatus::Failed => Some(
                    intent
                        .last_payment_error
                        .as_ref()
                        .map_or(intent.status.clone(), describe),
                ),
                _ => None,
            },
            provider_reference: intent.id,
            status,
            instructions,
            units: 1,
        })
    }

    fn refund(request: RefundRequest) -> Result<Refund, PluginError> {
        let form = [
            ("payment_intent", request.provider_reference.clone()),
            ("amount", request.amount_minor.to_string()),
        ];
        let (status, body) = post("/v1/refunds", &form, &request.idempotency_key)?;
        if !(200..300).contains(&status) {
            return Err(PluginError::invalid_input(format!(
                "the gateway refused the refund ({status}): {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let refund: RefundBody = parse(&body)?;
        let status = match refund.status.as_str() {
            "succeeded" => PaymentStatus::Succeeded,
            "pending" => PaymentStatus::Pending,
            _ => PaymentStatus::Failed,
        };
        Ok(Refund {
            provider_reference: refund.id,
            status,
            units: 1,
        })
    }

    fn parse_callback(callback: Callback) -> Result<PaymentEvents, PluginError> {
        if callback.body.len() > WEBHOOK_BYTES_MAX {
            return Err(PluginError::invalid_input("webhook body is too large"));
        }
        verify(&callback)?;
        let event: Event = serde_json::from_slice(&callback.body).map_err(|error| {
            PluginError::invalid_input(format!("webhook is not an event: {error}"))
        })?;
        let object = event.data.object;
        let (kind, reference) = match event.kind.as_str() {
            "payment_intent.succeeded" => (PaymentEventKind::Succeeded, object.id),
            "payment_intent.payment_failed" => (PaymentEventKind::Failed, object.id),
            "charge.refunded" => (
                PaymentEventKind::Refunded,
                object.payment_intent.unwrap_or(object.id),
            ),
            // Events we do not act on are acknowledged and dropped.
            _ => {
                return Ok(PaymentEvents {
                    events: Vec::new(),
                    units: 0,
                });
            }
        };
        Ok(PaymentEvents {
            events: vec![PaymentEvent {
                kind,
                provider_reference: reference,
                amount_minor: object.amount,
                currency: object.currency.map(|currency| currency.to_uppercase()),
                failure_reason: object.last_payment_error.as_ref().map(describe),
                event_id: event.id,
            }],
            units: 0,
        })
    }
}

fn verify(callback: &Callback) -> Result<(), PluginError> {
    let unauthorized = |message: &str| PluginError::new(ErrorKind::Unauthorized, message);
    let secret = host::required_setting("webhook_secret")?;
    let header = callback
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("stripe-signature"))
        .ok_or_else(|| unauthorized("the webhook is not signed"))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(value.to_owned()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| unauthorized("the signature has no timestamp"))?;
    let now = host::now_ms() / 1000;
    if now.abs_diff(timestamp) > WEBHOOK_TOLERANCE_SECONDS {
        return Err(unauthorized("the webhook is too old (or from the future)"));
    }
    let valid = signatures.iter().any(|signature| {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(&callback.body);
        mac.verify_slice(&signature).is_ok()
    });
    match valid {
        true => Ok(()),
        false => Err(unauthorized("the signature does not match the body")),
    }
}

register_plugin!(Card);
