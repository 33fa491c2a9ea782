use super::*;
use crate::db::testing::TwoTenants;
use crate::runtime::{KV_BYTES_MAX, KV_KEYS_MAX};
use crate::units::ManualClock;

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

type Setup = TwoTenants;

fn setup() -> Setup {
    TwoTenants::new(NOW)
}

fn store(s: &Setup, tenant: TenantId, plugin: &str) -> DbKv {
    DbKv::new(
        s.database.clone(),
        tenant,
        plugin,
        Arc::new(ManualClock::new(NOW)),
    )
}

#[test]
fn each_tenant_and_plugin_has_its_own_store() {
    let s = setup();
    let acme_csv = store(&s, s.acme, "csv-leads");
    let acme_mail = store(&s, s.acme, "email");
    let globex_csv = store(&s, s.globex, "csv-leads");
    acme_csv.set("token", b"acme").unwrap().unwrap();
    globex_csv.set("token", b"globex").unwrap().unwrap();
    assert_eq!(
        acme_csv.get("token").unwrap().as_deref(),
        Some(&b"acme"[..])
    );
    assert_eq!(
        globex_csv.get("token").unwrap().as_deref(),
        Some(&b"globex"[..])
    );
    assert_eq!(acme_mail.get("token").unwrap(), None);

    acme_csv.set("token", b"acme, again").unwrap().unwrap();
    assert_eq!(
        acme_csv.get("token").unwrap().as_deref(),
        Some(&b"acme, again"[..])
    );
    acme_csv.delete("token").unwrap();
    assert_eq!(acme_csv.get("token").unwrap(), None);
    assert_eq!(
        globex_csv.get("token").unwrap().as_deref(),
        Some(&b"globex"[..])
    );
}

#[test]
fn a_full_store_refuses_more_but_allows_overwriting() {
    let s = setup();
    let kv = store(&s, s.acme, "csv-leads");
    // Fill most of it with files (one transaction each), the rest with
    // values of the largest size.
    let mut conn = s.database.get().unwrap();
    let file = vec![7u8; FILE_BYTES_MAX];
    put_file(&mut conn, s.acme, "csv-leads", "a.csv", &file, NOW).unwrap();
    put_file(&mut conn, s.acme, "csv-leads", "b.csv", &file, NOW).unwrap();
    let (_, used) = usage(&mut conn, s.acme, "csv-leads", &[]).unwrap();
    let big = vec![7u8; KV_VALUE_BYTES_MAX];
    let n_fit = (KV_BYTES_MAX - used) / KV_VALUE_BYTES_MAX as u64;
    assert!(n_fit > 2);
    for n in 0..n_fit {
        kv.set(&format!("k{n}"), &big).unwrap().unwrap();
    }
    let left = KV_BYTES_MAX - used - n_fit * KV_VALUE_BYTES_MAX as u64;
    kv.set("fills-it", &vec![0; left as usize])
        .unwrap()
        .unwrap();
    let refusal = kv.set("one-more", b"x").unwrap().unwrap_err();
    assert!(refusal.starts_with("the store is full"), "{refusal}");
    // Replacing a value with one of the same size needs no new room.
    kv.set("k0", &big).unwrap().unwrap();
    kv.delete("k1").unwrap();
    kv.set("one-more", b"x").unwrap().unwrap();
}

#[test]
fn the_store_limits_its_number_of_keys() {
    // Checked on the in-memory store, which shares the quota rule; filling
    // a database with 10,000 keys one by one is a soak, not a unit test.
    let kv = crate::runtime::MemoryKv::default();
    for n in 0..KV_KEYS_MAX {
        kv.set(&format!("k{n}"), b"").unwrap().unwrap();
    }
    let refusal = kv.set("one-more", b"").unwrap().unwrap_err();
    assert!(refusal.contains("10000 keys"), "{refusal}");
    kv.set("k0", b"replaced").unwrap().unwrap();
}

#[test]
fn files_are_stored_in_chunks_listed_in_the_index() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    let kv = store(&s, s.acme, "csv-leads");
    let bytes: Vec<u8> = (0..(2 * KV_VALUE_BYTES_MAX + 10))
        .map(|n| (n % 251) as u8)
        .collect();
    let entry = put_file(&mut conn, s.acme, "csv-leads", "leads.csv", &bytes, NOW).unwrap();
    assert_eq!((entry.size, entry.chunks), (bytes.len() as u64, 3));
    assert_eq!(entry.uploaded_at_ms, 1_767_225_600_000);

    // A plugin reads it back through kv-get alone.
    let index: Vec<FileEntry> =
        serde_json::from_slice(&kv.get(FILES_KEY).unwrap().unwrap()).unwrap();
    assert_eq!(index, vec![entry.clone()]);
    let mut read = Vec::new();
    for n in 0..entry.chunks {
        read.extend(kv.get(&format!("file/leads.csv/{n:05}")).unwrap().unwrap());
    }
    assert_eq!(read, bytes);

    // Replacing it with a smaller file leaves no stale chunks behind.
    let entry = put_file(
        &mut conn,
        s.acme,
        "csv-leads",
        "leads.csv",
        b"email\nada@example.com\n",
        NOW,
    )
    .unwrap();
    assert_eq!(entry.chunks, 1);
    assert_eq!(kv.get("file/leads.csv/00001").unwrap(), None);
    assert_eq!(
        list_files(&mut conn, s.acme, "csv-leads").unwrap(),
        vec![entry]
    );
    // Another tenant sees none of it.
    assert_eq!(
        list_files(&mut conn, s.globex, "csv-leads").unwrap(),
        vec![]
    );

    delete_file(&mut conn, s.acme, "csv-leads", "leads.csv", NOW).unwrap();
    assert_eq!(list_files(&mut conn, s.acme, "csv-leads").unwrap(), vec![]);
    assert_eq!(kv.get("file/leads.csv/00000").unwrap(), None);
    assert!(matches!(
        delete_file(&mut conn, s.acme, "csv-leads", "leads.csv", NOW),
        Err(FileError::NotFound(_))
    ));
}

#[test]
fn uploads_refuse_bad_names_and_oversized_files() {
    let s = setup();
    let mut conn = s.database.get().unwrap();
    for name in ["", ".hidden", "a/b.csv", "leads file.csv", &"x".repeat(101)] {
        let refusal = put_file(&mut conn, s.acme, "csv-leads", name, b"x", NOW).unwrap_err();
        assert!(
            matches!(refusal, FileError::BadName(_)),
            "{name:?}: {refusal}"
        );
    }
    let huge = vec![b'x'; FILE_BYTES_MAX + 1];
    let refusal = put_file(&mut conn, s.acme, "csv-leads", "huge.csv", &huge, NOW).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        format!(
            "the file is {} bytes; at most {FILE_BYTES_MAX} may be uploaded",
            FILE_BYTES_MAX + 1
        )
    );
    // Files count against the store's quota with everything else.
    let max = vec![b'x'; FILE_BYTES_MAX];
    // The index takes a few bytes too, so one file fewer than the quota
    // divided by the file size fits.
    for n in 0..(KV_BYTES_MAX as usize / FILE_BYTES_MAX - 1) {
        put_file(
            &mut conn,
            s.acme,
            "csv-leads",
            &format!("f{n}.csv"),
            &max,
            NOW,
        )
        .unwrap();
    }
    let refusal = put_file(&mut conn, s.acme, "csv-leads", "last.csv", &max, NOW).unwrap_err();
    assert!(matches!(refusal, FileError::StoreFull(_)), "{refusal}");
    // Replacing a file counts only the difference.
    put_file(&mut conn, s.acme, "csv-leads", "f0.csv", &max, NOW).unwrap();
}

#[test]
fn concurrent_writes_of_one_key_all_succeed_and_one_wins() {
    let s = setup();
    let kv = store(&s, s.acme, "email");
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let kv = kv.clone();
            scope.spawn(move || {
                for n in 0..25 {
                    let value = format!("{thread}-{n}");
                    kv.set("idempotency/00", value.as_bytes())
                        .expect("no write fails on a race")
                        .unwrap();
                }
            });
        }
    });
    let last = String::from_utf8(kv.get("idempotency/00").unwrap().unwrap()).unwrap();
    assert!(last.ends_with("-24"), "{last}");
    let mut conn = s.database.get().unwrap();
    assert_eq!(
        usage(&mut conn, s.acme, "email", &[]).unwrap(),
        (1, last.len() as u64)
    );
}
