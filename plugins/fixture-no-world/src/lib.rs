//! A component that exports nothing Tollgate knows: install must refuse it.

/// A function no plugin world has.
#[unsafe(no_mangle)]
pub extern "C" fn not_a_plugin() -> u32 {
    42
}
