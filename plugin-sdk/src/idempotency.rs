//! Remembering what a call with an idempotency key did, so that a retry
//! returns the first result instead of acting twice (sending a message
//! again, charging a card again).
//!
//! Records live in the plugin's store in [`BUCKETS`] buckets
//! (`idempotency/00` to `idempotency/ff`, by a hash of the key), each
//! keeping its most recent records for at most [`RETENTION_MS`]: the store
//! stays small however many calls a tenant makes, and a retry within days
//! is always recognised. Two calls writing the same bucket at the same
//! moment may lose one record (the store has no transactions); a retry of
//! that call would then act again, so also pass the key to the outside
//! service where it takes one.

use crate::host;

/// How many buckets records are spread over.
pub const BUCKETS: u32 = 256;

/// How long a record is kept: 30 days.
pub const RETENTION_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Longest key remembered, in bytes.
pub const KEY_BYTES_MAX: usize = 512;

/// Longest result remembered, in bytes.
pub const RESULT_BYTES_MAX: usize = 512;

/// Most bytes one bucket holds; the oldest records go first. All buckets
/// together stay under 8 MiB of the store.
const BUCKET_BYTES_MAX: usize = 32_000;

/// One remembered call: when, what it returned, its key.
struct Record {
    at_ms: u64,
    result: String,
    key: String,
}

fn bucket_key(key: &str) -> String {
    // FNV-1a: stable across builds and platforms, which std's hasher is not.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("idempotency/{:02x}", hash % BUCKETS)
}

fn load(bucket: &str) -> Vec<Record> {
    let Some(bytes) = host::kv_get(bucket) else {
        return Vec::new();
    };
    // Lines of `<ms>\t<result>\t<key>`; anything else is skipped.
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            Some(Record {
                at_ms: fields.next()?.parse().ok()?,
                result: fields.next()?.to_owned(),
                key: fields.next()?.to_owned(),
            })
        })
        .collect()
}

fn valid(text: &str, max: usize) -> bool {
    text.len() <= max && !text.contains(['\t', '\n', '\r'])
}

/// The result remembered for `key`, if a call with it finished within the
/// retention period.
pub fn recall(key: &str) -> Option<String> {
    let now = host::now_ms();
    load(&bucket_key(key))
        .into_iter()
        .find(|record| record.key == key && now.saturating_sub(record.at_ms) < RETENTION_MS)
        .map(|record| record.result)
}

/// Remembers that the call with `key` returned `result`. Fails when either
/// is too long or holds a tab or line break, or when the store refuses.
pub fn remember(key: &str, result: &str) -> Result<(), String> {
    if !valid(key, KEY_BYTES_MAX) || !valid(result, RESULT_BYTES_MAX) {
        return Err(format!(
            "an idempotency key and its result must be at most {KEY_BYTES_MAX} bytes each, without tabs or line breaks"
        ));
    }
    let now = host::now_ms();
    let bucket = bucket_key(key);
    let mut records: Vec<Record> = load(&bucket)
        .into_iter()
        .filter(|record| record.key != key && now.saturating_sub(record.at_ms) < RETENTION_MS)
        .collect();
    records.push(Record {
        at_ms: now,
        result: result.to_owned(),
        key: key.to_owned(),
    });
    // Newest last; drop the oldest until the bucket fits.
    records.sort_by_key(|record| record.at_ms);
    let lines: Vec<String> = records
        .iter()
        .map(|record| format!("{}\t{}\t{}\n", record.at_ms, record.result, record.key))
        .collect();
    let mut total: usize = lines.iter().map(String::len).sum();
    let mut first = 0;
    while total > BUCKET_BYTES_MAX {
        total -= lines[first].len();
        first += 1;
    }
    let text = lines[first..].concat();
    host::kv_set(&bucket, text.as_bytes())
}

/// Remembers the result of a call that has already acted (a message
/// sent): a failure to remember is logged as a warning rather than
/// returned, since failing the call now would make its caller act again.
pub fn remember_after_acting(key: &str, result: &str) {
    if let Err(reason) = remember(key, result) {
        host::log(
            host::LogLevel::Warn,
            &format!(
                "{result} is done but could not be recorded, so a retry with its key would do it again: {reason}"
            ),
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing::Harness;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    #[test]
    fn a_retry_finds_the_first_result() {
        let mut harness = Harness::new().now_ms(1_000);
        harness.run(|| {
            assert_eq!(recall("msg-1"), None);
            remember("msg-1", "delivery-1").unwrap();
            remember("msg-2", "delivery-2").unwrap();
            assert_eq!(recall("msg-1").as_deref(), Some("delivery-1"));
            assert_eq!(recall("msg-2").as_deref(), Some("delivery-2"));
            // Remembering again replaces.
            remember("msg-1", "delivery-1b").unwrap();
            assert_eq!(recall("msg-1").as_deref(), Some("delivery-1b"));
        });
        assert!(harness.stored(&bucket_key("msg-1")).is_some());
    }

    #[test]
    fn records_expire_after_the_retention_period() {
        let mut harness = Harness::new().now_ms(DAY_MS);
        harness.run(|| remember("msg-1", "delivery-1").unwrap());
        let mut later = harness.clone().now_ms(DAY_MS + RETENTION_MS - 1);
        assert_eq!(later.run(|| recall("msg-1")).as_deref(), Some("delivery-1"));
        let mut expired = harness.now_ms(DAY_MS + RETENTION_MS);
        assert_eq!(expired.run(|| recall("msg-1")), None);
    }

    #[test]
    fn a_full_bucket_forgets_its_oldest_records() {
        // Keys that all land in one bucket, with long results.
        let keys: Vec<String> = (0..)
            .map(|n| format!("message-{n}"))
            .filter(|key| bucket_key(key) == "idempotency/00")
            .take(400)
            .collect();
        let result = |n: usize| format!("{n:0>200}");
        let mut harness = Harness::new();
        for (n, key) in keys.iter().enumerate() {
            harness = harness.now_ms(n as u64);
            harness.run(|| remember(key, &result(n)).unwrap());
        }
        let stored = harness.stored("idempotency/00").unwrap().len();
        assert!(stored <= BUCKET_BYTES_MAX, "{stored}");
        assert!(stored > BUCKET_BYTES_MAX - 300, "{stored}");
        harness.run(|| {
            assert_eq!(recall(&keys[0]), None, "the oldest is forgotten");
            assert_eq!(recall(&keys[399]), Some(result(399)));
            assert_eq!(recall(&keys[300]), Some(result(300)));
        });
        // Keys spread over the buckets.
        let buckets: std::collections::BTreeSet<String> =
            (0..10_000).map(|n| bucket_key(&format!("k{n}"))).collect();
        assert_eq!(buckets.len(), BUCKETS as usize);
    }

    #[test]
    fn refuses_what_it_could_not_read_back() {
        let mut harness = Harness::new();
        harness.run(|| {
            assert!(remember("a\tb", "x").is_err());
            assert!(remember("a", "x\ny").is_err());
            assert!(remember(&"k".repeat(KEY_BYTES_MAX + 1), "x").is_err());
            remember(&"k".repeat(KEY_BYTES_MAX), "x").unwrap();
        });
    }
}
