//! The runtime against real components built from `plugins/`.

use std::time::Duration;

use super::*;

fn wasm(name: &str) -> Vec<u8> {
    let path = artifacts::path(name).unwrap_or_else(|| panic!("no plugin {name} in plugins/"));
    std::fs::read(path).unwrap()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap()
}

fn hostile(runtime: &Runtime, limits: Limits) -> LoadedPlugin {
    runtime
        .load(
            "hostile",
            "0.1.0",
            PluginKind::LeadSource,
            &wasm("fixture-hostile"),
            limits,
        )
        .unwrap()
}

fn search(keywords: &str) -> Call {
    Call::Search(SearchQuery {
        keywords: Some(keywords.into()),
        title: None,
        company: None,
        domain: None,
        location: None,
        limit: 10,
        cursor: None,
    })
}

fn leads(invocation: &Invocation) -> Vec<String> {
    match &invocation.result {
        Ok(Reply::SearchPage(page)) => page
            .leads
            .iter()
            .map(|lead| lead.first_name.clone().unwrap_or_default())
            .collect(),
        other => panic!("expected a page of leads, got {other:?}"),
    }
}

fn price_request(base: u64) -> Call {
    Call::AdjustPrice(PriceRequest {
        plan: Some("starter".into()),
        plugin: "email".into(),
        function: "send".into(),
        units: 1,
        period_units: 10,
        base_price_micros: base,
    })
}

#[test]
fn a_pricing_rule_reads_the_tenants_settings() {
    let runtime = runtime();
    let markup = runtime
        .load(
            "markup",
            "0.1.0",
            PluginKind::PricingRule,
            &wasm("markup"),
            Limits::DEFAULT,
        )
        .unwrap();
    let mut context = CallContext::new("tenant-1");
    context
        .settings
        .insert("markup_percent".into(), "20".into());
    let invocation = runtime.invoke(&markup, context, price_request(1_000_001));
    match invocation.result {
        Ok(Reply::Price(price)) => {
            assert_eq!(price.price_micros, 1_200_002);
            assert_eq!(price.note.as_deref(), Some("20% markup"));
        }
        other => panic!("{other:?}"),
    }
    assert!(invocation.fuel_consumed > 0);

    let missing = runtime.invoke(&markup, CallContext::new("tenant-2"), price_request(5));
    match missing.result {
        Err(CallError::Plugin { plugin, error }) => {
            assert_eq!(plugin, "markup@0.1.0");
            assert_eq!(error.kind, ErrorKind::Misconfigured);
            assert!(
                error.message.contains("markup_percent"),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_plugins_fail_their_own_call_and_the_next_call_succeeds() {
    let runtime = runtime();
    let limits = Limits {
        fuel: 50_000_000,
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(20),
        output_bytes: 1 << 20,
    };
    let plugin = hostile(&runtime, limits);
    let check = |keywords: &str, expect: &dyn Fn(&CallError) -> bool| {
        let invocation = runtime.invoke(&plugin, CallContext::new("t"), search(keywords));
        match &invocation.result {
            Err(error) => assert!(expect(error), "{keywords}: unexpected {error:?}"),
            Ok(reply) => panic!("{keywords}: expected a failure, got {reply:?}"),
        }
        let error = invocation.result.unwrap_err().to_string();
        assert!(
            error.contains("hostile@0.1.0"),
            "{keywords}: the error names the plugin: {error}"
        );
        // The same plugin serves the next call as if nothing happened.
        let next = runtime.invoke(&plugin, CallContext::new("t"), search("ok"));
        assert_eq!(leads(&next), ["Ada"], "after {keywords}");
    };
    check("loop", &|error| {
        matches!(
            error,
            CallError::FuelExhausted {
                fuel: 50_000_000,
                ..
            }
        )
    });
    check(
        "memory",
        &|error| matches!(error, CallError::MemoryLimit { memory_bytes, .. } if *memory_bytes == 16 << 20),
    );
    check(
        "big",
        &|error| matches!(error, CallError::OutputTooLarge { output_bytes, .. } if *output_bytes == 1 << 20),
    );
    check("panic", &|error| matches!(error, CallError::Trap { .. }));
    check("trap", &|error| matches!(error, CallError::Trap { .. }));
    check("http", &|error| match error {
        CallError::Plugin { error, .. } => error
            .message
            .contains("denied: host \"undeclared.example\""),
        _ => false,
    });
}

#[test]
fn an_infinite_loop_stops_at_the_wall_clock_limit() {
    let runtime = runtime();
    let limits = Limits {
        fuel: Limits::HOST_MAX.fuel,
        timeout: Duration::from_millis(50),
        ..Limits::DEFAULT
    };
    let plugin = hostile(&runtime, limits);
    let invocation = runtime.invoke(&plugin, CallContext::new("t"), search("loop"));
    match invocation.result {
        Err(CallError::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(50)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        leads(&runtime.invoke(&plugin, CallContext::new("t"), search("ok"))),
        ["Ada"]
    );
}

#[test]
fn what_a_plugin_prints_or_logs_reaches_the_host_log() {
    let runtime = runtime();
    let plugin = hostile(&runtime, Limits::DEFAULT);
    let invocation = runtime.invoke(&plugin, CallContext::new("t"), search("print"));
    assert_eq!(leads(&invocation), ["printed"]);
    let lines: Vec<(&str, &str)> = invocation
        .logs
        .iter()
        .map(|line| (line.level, line.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("warn", "hello from the log import"),
            ("info", "hello from stdout"),
            ("warn", "hello from stderr"),
        ]
    );
}

#[test]
fn a_manifest_cannot_raise_limits_above_the_hosts() {
    let runtime = runtime();
    let greedy = Limits {
        fuel: u64::MAX,
        memory_bytes: usize::MAX,
        timeout: Duration::from_secs(3600),
        output_bytes: usize::MAX,
    };
    assert_eq!(hostile(&runtime, greedy).limits, Limits::HOST_MAX);
}

#[test]
fn loading_refuses_what_is_not_a_plugin_of_the_kind() {
    let runtime = runtime();
    let load = |kind, bytes: &[u8]| runtime.load("p", "1.0.0", kind, bytes, Limits::DEFAULT);
    match load(PluginKind::PricingRule, b"not wasm at all") {
        Err(LoadError::NotAComponent { plugin, .. }) => assert_eq!(plugin, "p@1.0.0"),
        other => panic!("{other:?}"),
    }
    // A core module is WebAssembly but not a component.
    let core_module = b"\0asm\x01\0\0\0";
    assert!(matches!(
        load(PluginKind::PricingRule, core_module),
        Err(LoadError::NotAComponent { .. })
    ));
    match load(PluginKind::LeadSource, &wasm("markup")) {
        Err(LoadError::WrongWorld { kind, reason, .. }) => {
            assert_eq!(kind, PluginKind::LeadSource);
            assert!(reason.contains("no export"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let markup = load(PluginKind::PricingRule, &wasm("markup")).unwrap();
    let wrong = runtime.invoke(&markup, CallContext::new("t"), search("ok"));
    assert_eq!(
        wrong.result.unwrap_err(),
        CallError::WrongFunction {
            plugin: "p@1.0.0".into(),
            kind: PluginKind::PricingRule,
            function: "search",
        }
    );
}

#[test]
fn a_restart_loads_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    };
    let load = |runtime: &Runtime| {
        runtime
            .load(
                "markup",
                "0.1.0",
                PluginKind::PricingRule,
                &wasm("markup"),
                Limits::DEFAULT,
            )
            .unwrap()
    };
    let first = Runtime::new(config.clone()).unwrap();
    load(&first);
    assert_eq!(first.compile_cache_stats(), Some((0, 1)));
    drop(first);
    // A new engine, as after a restart, finds the code compiled.
    let second = Runtime::new(config).unwrap();
    let markup = load(&second);
    assert_eq!(second.compile_cache_stats(), Some((1, 0)));
    let mut context = CallContext::new("t");
    context
        .settings
        .insert("markup_percent".into(), "100".into());
    match second.invoke(&markup, context, price_request(21)).result {
        Ok(Reply::Price(price)) => assert_eq!(price.price_micros, 42),
        other => panic!("{other:?}"),
    }
    assert_eq!(runtime().compile_cache_stats(), None);
}
