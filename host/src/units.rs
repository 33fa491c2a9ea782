//! Exact quantities: credits, money and points in time.
//!
//! Credits are a fixed-point `i64` of millionths of a credit; money is an
//! integer number of minor units (cents) with its currency; time is
//! microseconds since the Unix epoch. `rust_decimal` appears only where these
//! cross into configuration or an API. Nothing here is ever a float.

use std::fmt;

use rust_decimal::Decimal;

/// Millionths of a credit in one credit.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// An exact number of credits, stored as millionths of a credit.
///
/// Signed, because balances and limits are; amounts moved by a transfer are
/// checked to be positive where they enter the ledger.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);
    pub const MAX: Credits = Credits(i64::MAX);

    pub const fn from_micros(micros: i64) -> Credits {
        Credits(micros)
    }

    /// Whole credits; `None` when the value does not fit.
    pub const fn from_whole(credits: i64) -> Option<Credits> {
        match credits.checked_mul(MICROS_PER_CREDIT) {
            Some(micros) => Some(Credits(micros)),
            None => None,
        }
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }

    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// The exact decimal value, for APIs and config.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, 6).normalize()
    }

    /// Converts a decimal number of credits; refuses more than six decimal
    /// places (which would need rounding) and values that do not fit.
    pub fn from_decimal(value: Decimal) -> Result<Credits, UnitError> {
        let micros = value
            .checked_mul(Decimal::from(MICROS_PER_CREDIT))
            .ok_or(UnitError::Overflow)?;
        if !micros.fract().is_zero() {
            return Err(UnitError::TooPrecise { value, places: 6 });
        }
        let micros: i64 = micros.try_into().map_err(|_| UnitError::Overflow)?;
        Ok(Credits(micros))
    }

    /// Parses `"12"`, `"0.5"` or `"-3.000001"`.
    pub fn parse(text: &str) -> Result<Credits, UnitError> {
        let value: Decimal = text
            .trim()
            .parse()
            .map_err(|_| UnitError::NotANumber(text.to_owned()))?;
        Credits::from_decimal(value)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}cr", self.to_decimal())
    }
}

/// Why a quantity could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{value} has more than {places} decimal places")]
    TooPrecise { value: Decimal, places: u32 },
    #[error("value is too large")]
    Overflow,
    #[error("{0:?} is not a three-letter ISO 4217 currency code")]
    BadCurrency(String),
}

/// An ISO 4217 currency code, upper case. Every currency we accept has two
/// minor digits (cents); [`Currency::parse`] refuses the others until we
/// support them, rather than silently mispricing yen or dinars.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

/// Currencies with two minor digits that Tollgate prices in.
const CURRENCIES_SUPPORTED: [&str; 8] = ["USD", "EUR", "GBP", "CAD", "AUD", "CHF", "SEK", "NZD"];

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    pub fn parse(code: &str) -> Result<Currency, UnitError> {
        if !CURRENCIES_SUPPORTED.contains(&code) {
            return Err(UnitError::BadCurrency(code.to_owned()));
        }
        let bytes = code.as_bytes();
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }

    /// Digits after the decimal point in this currency's minor unit.
    pub fn minor_digits(&self) -> u32 {
        2
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money in integer minor units of one currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// Converts a decimal amount such as `49.00`; refuses fractions of a
    /// minor unit instead of rounding them away.
    pub fn from_decimal(value: Decimal, currency: Currency) -> Result<Money, UnitError> {
        let scale = Decimal::from(10_i64.pow(currency.minor_digits()));
        let minor = value.checked_mul(scale).ok_or(UnitError::Overflow)?;
        if !minor.fract().is_zero() {
            return Err(UnitError::TooPrecise {
                value,
                places: currency.minor_digits(),
            });
        }
        let minor: i64 = minor.try_into().map_err(|_| UnitError::Overflow)?;
        Ok(Money { minor, currency })
    }

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.minor, self.currency.minor_digits())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn saturating_add_micros(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }

    pub fn to_chrono(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    pub fn from_chrono(time: chrono::DateTime<chrono::Utc>) -> Timestamp {
        Timestamp(time.timestamp_micros())
    }

    /// Parses an RFC 3339 time, such as `2027-01-01T00:00:00Z`.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| Timestamp::from_chrono(time.to_utc()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.to_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Where the time comes from. The ledger and the scheduler take one, so tests
/// drive time by hand instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_chrono(chrono::Utc::now())
    }
}

/// A clock that moves only when told to, for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(start.micros()))
    }

    pub fn advance_micros(&self, micros: i64) {
        self.0
            .fetch_add(micros, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.0
            .store(at.micros(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_credits(text: &str, expect: Result<i64, UnitError>) {
        assert_eq!(Credits::parse(text).map(Credits::micros), expect, "{text}");
    }

    #[test]
    fn credits_parse_exactly() {
        check_credits("1", Ok(1_000_000));
        check_credits("0.000001", Ok(1));
        check_credits("-2.5", Ok(-2_500_000));
        check_credits(
            "0.0000001",
            Err(UnitError::TooPrecise {
                value: "0.0000001".parse().unwrap(),
                places: 6,
            }),
        );
        check_credits("9223372036854.775807", Ok(i64::MAX));
        check_credits("9223372036854.775808", Err(UnitError::Overflow));
        check_credits("ten", Err(UnitError::NotANumber("ten".into())));
    }

    #[test]
    fn credits_display_without_trailing_zeros() {
        assert_eq!(Credits::from_micros(1_500_000).to_string(), "1.5");
        assert_eq!(Credits::from_whole(1000).unwrap().to_string(), "1000");
        assert_eq!(Credits::from_whole(i64::MAX), None);
    }

    #[test]
    fn money_refuses_fractions_of_a_cent() {
        let usd = Currency::USD;
        let money = Money::from_decimal("49.00".parse().unwrap(), usd).unwrap();
        assert_eq!(money.minor, 4900);
        assert_eq!(money.to_string(), "49.00 USD");
        assert!(Money::from_decimal("0.005".parse().unwrap(), usd).is_err());
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("JPY").is_err());
    }
}
