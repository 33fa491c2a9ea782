//! Bindings for WIT `tollgate:plugin@0.1.0`, one world at a time. The
//! interfaces every world shares are generated once, with `lead-source`, and
//! the other worlds point at them, so a type means the same thing in all.

pub mod lead_source {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.1",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        // A host function may fail on the host's side (the database is
        // down); that fails the call, as the platform's fault.
        imports: { default: trappable },
        world: "lead-source",
    });
}

pub mod channel {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.1",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        // A host function may fail on the host's side (the database is
        // down); that fails the call, as the platform's fault.
        imports: { default: trappable },
        world: "channel",
        with: {
            "tollgate:plugin/types": super::lead_source::tollgate::plugin::types,
            "tollgate:plugin/host": super::lead_source::tollgate::plugin::host,
        },
    });
}

pub mod payment_provider {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.1",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        // A host function may fail on the host's side (the database is
        // down); that fails the call, as the platform's fault.
        imports: { default: trappable },
        world: "payment-provider",
        with: {
            "tollgate:plugin/types": super::lead_source::tollgate::plugin::types,
            "tollgate:plugin/host": super::lead_source::tollgate::plugin::host,
        },
    });
}

pub mod pricing_rule {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.1",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        // A host function may fail on the host's side (the database is
        // down); that fails the call, as the platform's fault.
        imports: { default: trappable },
        world: "pricing-rule",
        with: {
            "tollgate:plugin/types": super::lead_source::tollgate::plugin::types,
            "tollgate:plugin/host": super::lead_source::tollgate::plugin::host,
        },
    });
}

pub use channel::tollgate::plugin::{messages, smtp};
pub use lead_source::tollgate::plugin::{host, leads, types};
pub use payment_provider::tollgate::plugin::payments;
pub use pricing_rule::tollgate::plugin::pricing;
