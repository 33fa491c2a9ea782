//! Write Tollgate plugins in Rust.
//!
//! A plugin is a WebAssembly component of one kind: a lead source, a
//! messaging channel, a payment provider or a pricing rule. Enable the
//! feature of that kind, implement its trait, and register the type:
//!
//! ```ignore
//! use tollgate_plugin_sdk::{PricingRule, PluginError, PriceRequest, Price};
//!
//! struct Markup;
//!
//! impl PricingRule for Markup {
//!     fn adjust_price(request: PriceRequest) -> Result<Price, PluginError> {
//!         Ok(Price { price_micros: request.base_price_micros * 6 / 5, note: None })
//!     }
//! }
//!
//! tollgate_plugin_sdk::register_plugin!(Markup);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`. The host
//! runs each call in a fresh sandboxed instance: no files, sockets or
//! environment; reach the world through [`host`]. `docs/PLUGINS.md` walks
//! from `cargo new` to an installed plugin.
#![deny(missing_docs)]

#[cfg(all(
    target_arch = "wasm32",
    not(any(
        feature = "lead-source",
        feature = "channel",
        feature = "payment-provider",
        feature = "pricing-rule"
    ))
))]
compile_error!(
    "enable the feature of the plugin's kind: lead-source, channel, payment-provider or pricing-rule"
);

#[cfg(any(
    all(
        feature = "lead-source",
        any(
            feature = "channel",
            feature = "payment-provider",
            feature = "pricing-rule"
        )
    ),
    all(
        feature = "channel",
        any(feature = "payment-provider", feature = "pricing-rule")
    ),
    all(feature = "payment-provider", feature = "pricing-rule"),
))]
compile_error!("a plugin is exactly one kind: enable one of the kind features");

/// The generated bindings. Private in all but name: the register macro
/// needs a path to them.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod wit {
    #[cfg(all(feature = "lead-source", not(feature = "api-0-2")))]
    wit_bindgen::generate!({
        path: "wit/v0.1",
        world: "lead-source",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "lead-source", feature = "api-0-2"))]
    wit_bindgen::generate!({
        path: "wit/v0.2",
        world: "lead-source",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "channel", not(feature = "api-0-2")))]
    wit_bindgen::generate!({
        path: "wit/v0.1",
        world: "channel",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "channel", feature = "api-0-2"))]
    wit_bindgen::generate!({
        path: "wit/v0.2",
        world: "channel",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "payment-provider", not(feature = "api-0-2")))]
    wit_bindgen::generate!({
        path: "wit/v0.1",
        world: "payment-provider",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "payment-provider", feature = "api-0-2"))]
    wit_bindgen::generate!({
        path: "wit/v0.2",
        world: "payment-provider",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "pricing-rule", not(feature = "api-0-2")))]
    wit_bindgen::generate!({
        path: "wit/v0.1",
        world: "pricing-rule",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
    #[cfg(all(feature = "pricing-rule", feature = "api-0-2"))]
    wit_bindgen::generate!({
        path: "wit/v0.2",
        world: "pricing-rule",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "tollgate_plugin_sdk::wit",
        additional_derives: [PartialEq, Eq],
    });
}

#[cfg(any(
    feature = "lead-source",
    feature = "channel",
    feature = "payment-provider",
    feature = "pricing-rule"
))]
mod kinds;

#[cfg(any(
    feature = "lead-source",
    feature = "channel",
    feature = "payment-provider",
    feature = "pricing-rule"
))]
pub use kinds::*;

#[cfg(any(
    feature = "lead-source",
    feature = "channel",
    feature = "payment-provider",
    feature = "pricing-rule"
))]
pub mod idempotency;

#[cfg(all(
    not(target_arch = "wasm32"),
    any(
        feature = "lead-source",
        feature = "channel",
        feature = "payment-provider",
        feature = "pricing-rule"
    )
))]
pub mod testing;
