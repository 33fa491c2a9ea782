//! `paypal`: payments through a PayPal-style orders API (v2). With a vaulted
//! PayPal account (`payment_method_token`) the order is created and captured
//! at once; without one the order waits for the payer, and the instructions
//! carry the approval link. Access tokens come from the client-credentials
//! grant and are kept in the plugin's store until they expire. Webhooks are
//! verified the way PayPal requires: by asking the API
//! (`/v1/notifications/verify-webhook-signature`).

use serde::Deserialize;
use serde_json::json;
use tollgate_plugin_sdk::{
    Callback, ErrorKind, Field, Method, Payment, PaymentEvent, PaymentEventKind, PaymentEvents,
    PaymentProvider, PaymentRequest, PaymentStatus, PluginError, Refund, RefundRequest, host,
    register_plugin,
};

struct PayPal;

const DEFAULT_BASE_URL: &str = "https://api-m.paypal.com";
const TOKEN_KEY: &str = "access_token";

/// A webhook larger than this is not one.
const WEBHOOK_BYTES_MAX: usize = 256 << 10;

fn base_url() -> String {
    host::setting("api_base_url")
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

fn send(
    method: &str,
    path: &str,
    headers: Vec<Field>,
    body: Vec<u8>,
) -> Result<host::HttpResponse, PluginError> {
    let request = host::HttpRequest {
        method: method.into(),
        url: format!("{}{path}", base_url()),
        headers,
        body,
    };
    let response = host::http_send(&request)?;
    match response.status {
        401 | 403 => Err(PluginError::new(
            ErrorKind::Unauthorized,
            "PayPal refused the credentials",
        )),
        429 => Err(PluginError::new(
            ErrorKind::RateLimited,
            "PayPal asks to slow down",
        )),
        500..=599 => Err(PluginError::upstream(format!(
            "PayPal failed ({}); retry with the same key",
            response.status
        ))),
        _ => Ok(response),
    }
}

fn header(name: &str, value: impl Into<String>) -> Field {
    Field {
        name: name.into(),
        value: value.into(),
    }
}

/// A bearer token, from the store while it is valid, else a new one.
fn access_token() -> Result<String, PluginError> {
    let now = host::now_ms();
    if let Some(stored) = host::kv_get(TOKEN_KEY) {
        let stored = String::from_utf8_lossy(&stored).into_owned();
        if let Some((expires_ms, token)) = stored.split_once(' ')
            && expires_ms
                .parse::<u64>()
                .is_ok_and(|expires_ms| expires_ms > now)
        {
            return Ok(token.to_owned());
        }
    }
    let client_id = host::required_setting("client_id")?;
    let secret = host::required_setting("client_secret")?;
    let credentials = base64(format!("{client_id}:{secret}").as_bytes());
    let response = send(
        "POST",
        "/v1/oauth2/token",
        vec![
            header("authorization", format!("Basic {credentials}")),
            header("content-type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials".to_vec(),
    )?;
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
        expires_in: u64,
    }
    let token: Token = parse(&response)?;
    // Renew a minute early rather than fail a call on the boundary.
    let expires_ms = now + token.expires_in.saturating_sub(60) * 1000;
    host::kv_set(
        TOKEN_KEY,
        format!("{expires_ms} {}", token.access_token).as_bytes(),
    )
    .map_err(|error| PluginError::new(ErrorKind::Internal, error))?;
    Ok(token.access_token)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            match index <= chunk.len() {
                true => out.push(ALPHABET[(n >> (18 - 6 * index) & 63) as usize] as char),
                false => out.push('='),
            }
        }
    }
    out
}

fn parse<T: for<'de> Deserialize<'de>>(response: &host::HttpResponse) -> Result<T, PluginError> {
    if !(200..300).contains(&response.status) {
        return Err(PluginError::invalid_input(format!(
            "PayPal refused the request ({}): {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )));
    }
    serde_json::from_slice(&response.body).map_err(|error| {
        PluginError::upstream(format!("PayPal answered with unexpected JSON: {error}"))
    })
}

fn post_json(
    path: &str,
    body: serde_json::Value,
    request_id: Option<&str>,
) -> Result<host::HttpResponse, PluginError> {
    let mut headers = vec![
        header("authorization", format!("Bearer {}", access_token()?)),
        header("content-type", "application/json"),
    ];
    if let Some(request_id) = request_id {
        headers.push(header("paypal-request-id", request_id));
    }
    send("POST", path, headers, body.to_string().into_bytes())
}

fn decimal(amount_minor: u64) -> String {
    format!("{}.{:02}", amount_minor / 100, amount_minor % 100)
}

#[derive(Deserialize)]
struct Order {
    id: String,
    status: String,
    #[serde(default)]
    links: Vec<Link>,
    #[serde(default)]
    purchase_units: Vec<PurchaseUnit>,
}

#[derive(Deserialize)]
struct Link {
    rel: String,
    href: String,
}

#[derive(Deserialize)]
struct PurchaseUnit {
    payments: Option<Payments>,
}

#[derive(Deserialize)]
struct Payments {
    #[serde(default)]
    captures: Vec<Capture>,
}

#[derive(Deserialize)]
struct Capture {
    id: String,
    status: String,
}

impl PaymentProvider for PayPal {
    fn create_payment(request: PaymentRequest) -> Result<Payment, PluginError> {
        if request.method != Method::Paypal {
            return Err(PluginError::invalid_input(
                "the paypal provider takes PayPal payments only",
            ));
        }
        let mut order = json!({
            "intent": "CAPTURE",
            "purchase_units": [{
                "reference_id": request.customer_reference,
                "description": request.description,
                "amount": {"currency_code": request.currency, "value": decimal(request.amount_minor)},
            }],
        });
        if let Some(vault_id) = &request.payment_method_token {
            order["payment_source"] = json!({"paypal": {"vault_id": vault_id}});
        }
        let created: Order = parse(&post_json(
            "/v2/checkout/orders",
            order,
            Some(&request.idempotency_key),
        )?)?;
        if request.payment_method_token.is_none() {
            let approve = created
                .links
                .iter()
                .find(|link| link.rel == "approve" || link.rel == "payer-action");
            return Ok(Payment {
                provider_reference: created.id,
                status: PaymentStatus::Pending,
                failure_reason: None,
                instructions: approve.map(|link| format!("Approve the payment at {}", link.href)),
                units: 1,
            });
        }
        let capture_key = format!("{}-capture", request.idempotency_key);
        let path = format!("/v2/checkout/orders/{}/capture", created.id);
        let captured: Order = parse(&post_json(&path, json!({}), Some(&capture_key))?)?;
        let capture = captured
            .purchase_units
            .into_iter()
            .filter_map(|unit| unit.payments)
            .flat_map(|payments| payments.captures)
            .next();
        let (reference, status) = match capture {
            Some(capture) => (capture.id, capture.status),
            None => (captured.id, captured.status),
        };
        let (status, failure_reason) = match status.as_str() {
            "COMPLETED" => (PaymentStatus::Succeeded, None),
            "PENDING" => (PaymentStatus::Pending, None),
            other => (PaymentStatus::Failed, Some(format!("PayPal: {other}"))),
        };
        Ok(Payment {
            provider_reference: reference,
            status,
            failure_reason,
            instructions: None,
            units: 1,
        })
    }

    fn refund(request: RefundRequest) -> Result<Refund, PluginError> {
        let path = format!(
            "/v2/payments/captures/{}/refund",
            request.provider_reference
        );
        let body = json!({"amount": {"value": decimal(request.amount_minor), "currency_code": request.currency}});
        #[derive(Deserialize)]
        struct RefundBody {
            id: String,
            status: String,
        }
        let refund: RefundBody = parse(&post_json(&path, body, Some(&request.idempotency_key))?)?;
        let status = match refund.status.as_str() {
            "COMPLETED" => PaymentStatus::Succeeded,
            "PENDING" => PaymentStatus::Pending,
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
        let event: serde_json::Value = serde_json::from_slice(&callback.body)
            .map_err(|error| PluginError::invalid_input(format!("webhook is not JSON: {error}")))?;
        verify(&callback, &event)?;
        let kind = match event["event_type"].as_str().unwrap_or_default() {
            "PAYMENT.CAPTURE.COMPLETED" => PaymentEventKind::Succeeded,
            "PAYMENT.CAPTURE.DENIED" => PaymentEventKind::Failed,
            "PAYMENT.CAPTURE.REFUNDED" => PaymentEventKind::Refunded,
            _ => {
                return Ok(PaymentEvents {
                    events: Vec::new(),
                    units: 0,
                });
            }
        };
        let resource = &event["resource"];
        let amount_minor = resource["amount"]["value"].as_str().and_then(|value| {
            let (whole, cents) = value.split_once('.').unwrap_or((value, "0"));
            Some(
                whole.parse::<u64>().ok()? * 100
                    + format!("{cents:0<2}")[..2].parse::<u64>().ok()?,
            )
        });
        Ok(PaymentEvents {
            events: vec![PaymentEvent {
                kind,
                provider_reference: resource["id"].as_str().unwrap_or_default().to_owned(),
                amount_minor,
                currency: resource["amount"]["currency_code"]
                    .as_str()
                    .map(str::to_owned),
                failure_reason: resource["status_details"]["reason"]
                    .as_str()
                    .map(str::to_owned),
                event_id: event["id"].as_str().unwrap_or_default().to_owned(),
            }],
            units: 0,
        })
    }
}

/// Asks the API whether the webhook is genuine, as PayPal prescribes.
fn verify(callback: &Callback, event: &serde_json::Value) -> Result<(), PluginError> {
    let get = |name: &str| {
        callback
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.clone())
            .ok_or_else(|| {
                PluginError::new(
                    ErrorKind::Unauthorized,
                    format!("the webhook has no {name} header"),
                )
            })
    };
    let body = json!({
        "transmission_id": get("paypal-transmission-id")?,
        "transmission_time": get("paypal-transmission-time")?,
        "transmission_sig": get("paypal-transmission-sig")?,
        "cert_url": get("paypal-cert-url")?,
        "auth_algo": get("paypal-auth-algo")?,
        "webhook_id": host::required_setting("webhook_id")?,
        "webhook_event": event,
    });
    #[derive(Deserialize)]
    struct Verification {
        verification_status: String,
    }
    let verdict: Verification = parse(&post_json(
        "/v1/notifications/verify-webhook-signature",
        body,
        None,
    )?)?;
    match verdict.verification_status.as_str() {
        "SUCCESS" => Ok(()),
        _ => Err(PluginError::new(
            ErrorKind::Unauthorized,
            "PayPal did not confirm the webhook's signature",
        )),
    }
}

register_plugin!(PayPal);

#[cfg(test)]
mod tests {
    use tollgate_plugin_sdk::testing::Harness;

    use super::*;

    fn payment(token: Option<&str>) -> PaymentRequest {
        PaymentRequest {
            amount_minor: 14_900,
            currency: "USD".into(),
            method: Method::Paypal,
            payment_method_token: token.map(str::to_owned),
            customer_reference: "tenant-1".into(),
            description: "Professional plan".into(),
            idempotency_key: "inv-9".into(),
        }
    }

    fn settings() -> Harness {
        Harness::new()
            .setting("client_id", "id")
            .setting("client_secret", "secret")
            .setting("webhook_id", "wh-1")
            .now_ms(1_000_000)
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b"id:secret"), "aWQ6c2VjcmV0");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn an_order_without_a_vaulted_account_waits_for_the_payer() {
        let mut harness = settings()
            .respond(200, r#"{"access_token": "tok", "expires_in": 3600}"#)
            .respond(201, r#"{"id": "ORDER-1", "status": "PAYER_ACTION_REQUIRED", "links": [{"rel": "payer-action", "href": "https://paypal.example/approve/ORDER-1"}]}"#);
        let paid = harness
            .run(|| PayPal::create_payment(payment(None)))
            .unwrap();
        assert_eq!(paid.status, PaymentStatus::Pending);
        assert_eq!(paid.provider_reference, "ORDER-1");
        assert_eq!(
            paid.instructions.as_deref(),
            Some("Approve the payment at https://paypal.example/approve/ORDER-1")
        );
        let requests = harness.requests();
        assert_eq!(requests[0].url, "https://api-m.paypal.com/v1/oauth2/token");
        assert!(
            requests[0]
                .headers
                .iter()
                .any(|h| h.value == "Basic aWQ6c2VjcmV0")
        );
        let order: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
        assert_eq!(order["purchase_units"][0]["amount"]["value"], "149.00");
        assert!(
            requests[1]
                .headers
                .iter()
                .any(|h| h.name == "paypal-request-id" && h.value == "inv-9")
        );
        assert!(harness.stored(TOKEN_KEY).is_some());
    }

    #[test]
    fn a_vaulted_account_is_captured_at_once_and_the_token_is_reused() {
        let mut harness = settings()
            .kv(TOKEN_KEY, b"99999999 cached-token")
            .respond(201, r#"{"id": "ORDER-2", "status": "CREATED"}"#)
            .respond(201, r#"{"id": "ORDER-2", "status": "COMPLETED", "purchase_units": [{"payments": {"captures": [{"id": "CAP-2", "status": "COMPLETED"}]}}]}"#);
        let paid = harness
            .run(|| PayPal::create_payment(payment(Some("vault-7"))))
            .unwrap();
        assert_eq!(
            (paid.status, paid.provider_reference.as_str()),
            (PaymentStatus::Succeeded, "CAP-2")
        );
        let requests = harness.requests();
        assert_eq!(
            requests.len(),
            2,
            "the stored token is used, no new one fetched"
        );
        assert!(
            requests[0]
                .headers
                .iter()
                .any(|h| h.value == "Bearer cached-token")
        );
        assert!(
            requests[1]
                .url
                .ends_with("/v2/checkout/orders/ORDER-2/capture")
        );
    }

    #[test]
    fn webhooks_count_only_when_paypal_confirms_them() {
        let body = r#"{"id": "WH-1", "event_type": "PAYMENT.CAPTURE.REFUNDED", "resource": {"id": "CAP-2", "amount": {"value": "10.5", "currency_code": "USD"}}}"#;
        let headers = [
            "paypal-transmission-id",
            "paypal-transmission-time",
            "paypal-transmission-sig",
            "paypal-cert-url",
            "paypal-auth-algo",
        ]
        .map(|name| Field {
            name: name.into(),
            value: "x".into(),
        })
        .to_vec();
        let callback = Callback {
            headers: headers.clone(),
            body: body.as_bytes().to_vec(),
        };
        let mut harness = settings()
            .kv(TOKEN_KEY, b"99999999 t")
            .respond(200, r#"{"verification_status": "SUCCESS"}"#)
            .respond(200, r#"{"verification_status": "FAILURE"}"#);
        let events = harness
            .run(|| PayPal::parse_callback(callback.clone()))
            .unwrap();
        let event = &events.events[0];
        assert_eq!(event.kind, PaymentEventKind::Refunded);
        assert_eq!(
            (event.amount_minor, event.event_id.as_str()),
            (Some(1_050), "WH-1")
        );
        let verify: serde_json::Value =
            serde_json::from_slice(&harness.requests()[0].body).unwrap();
        assert_eq!(verify["webhook_id"], "wh-1");
        let error = harness
            .run(|| PayPal::parse_callback(callback))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unauthorized);
        let unsigned = Callback {
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            harness
                .run(|| PayPal::parse_callback(unsigned))
                .unwrap_err()
                .kind,
            ErrorKind::Unauthorized
        );
    }
}
