//! Plugin invocations per second: a fresh sandboxed instance per call, as
//! Tollgate runs every call, for a no-op export and for a real plugin.
//!
//! Run: `cargo bench -p tollgate --bench runtime` (`BENCH_QUICK=1` for a
//! short run).

use std::time::{Duration, Instant};

use tollgate::runtime::{
    Call, CallContext, KV_VALUE_BYTES_MAX, KvStore as _, Limits, MemoryKv, PluginKind,
    PriceRequest, Runtime, RuntimeConfig, SearchQuery, artifacts,
};

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let n_calls: usize = if quick { 2_000 } else { 50_000 };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let wasm = std::fs::read(artifacts::path("fixture-noop").expect("built by host/build.rs"))?;
    let noop = runtime.load(
        "noop",
        "0.1.0",
        PluginKind::PricingRule,
        &wasm,
        Limits::DEFAULT,
    )?;
    let call = Call::AdjustPrice(PriceRequest {
        plan: None,
        plugin: "x".into(),
        function: "y".into(),
        units: 1,
        period_units: 0,
        base_price_micros: 7,
    });
    let context = CallContext::new("bench");
    // Warm up: compile caches, pool slots, page tables.
    for _ in 0..200 {
        runtime
            .invoke(&noop, context.clone(), call.clone())
            .result?;
    }
    println!("mode                                           calls   seconds   calls/s   us/call");
    for threads in [1, 2] {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..n_calls / threads {
                        runtime
                            .invoke(&noop, context.clone(), call.clone())
                            .result
                            .expect("no-op succeeds");
                    }
                });
            }
        });
        report(
            &format!("no-op, fresh instance, {threads} thread(s)"),
            n_calls,
            started.elapsed(),
            threads,
        );
    }
    csv_leads(&runtime, if quick { 20 } else { 200 })?;
    first_call_after_restart()?;
    for limits in [false, true] {
        let elapsed = raw::reused_instance(&wasm, n_calls, limits)?;
        let mode = match limits {
            true => "raw wasmtime, reused, fuel+epoch",
            false => "raw wasmtime, reused, no limits",
        };
        report(mode, n_calls, elapsed, 1);
    }
    Ok(())
}

/// A csv-leads search over an uploaded file held in the store as the host
/// keeps uploads (64 KiB chunks): the first page of a common match, and a
/// rare match that reads the whole file.
fn csv_leads(runtime: &Runtime, n_calls: usize) -> anyhow::Result<()> {
    let path = artifacts::path("csv-leads").expect("built by host/build.rs");
    let manifest = tollgate::plugins::Manifest::parse(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/csv-leads/plugin.toml"),
    )?)?;
    let plugin = runtime.load(
        "csv-leads",
        "0.1.0",
        PluginKind::LeadSource,
        &std::fs::read(path)?,
        manifest.limits,
    )?;
    for rows in [1_000, 10_000] {
        let mut csv = String::from("First Name,Last Name,Email,Title,Company,City\n");
        for i in 0..rows {
            let city = if i == rows - 1 { "Reykjavik" } else { "Paris" };
            csv.push_str(&format!(
                "Lead{i},Person,lead{i}@company{}.example,Head of Sales,Company {},{city}\n",
                i % 50,
                i % 50
            ));
        }
        let kv = MemoryKv::default();
        let chunks: Vec<&[u8]> = csv.as_bytes().chunks(KV_VALUE_BYTES_MAX).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            kv.set(&format!("file/leads.csv/{n:05}"), chunk)?
                .map_err(anyhow::Error::msg)?;
        }
        let index = format!(r#"[{{"name": "leads.csv", "chunks": {}}}]"#, chunks.len());
        kv.set("files", index.as_bytes())?
            .map_err(anyhow::Error::msg)?;
        let mut context = CallContext::new("bench");
        context.kv = std::sync::Arc::new(kv);
        for (location, what) in [
            ("paris", "first page of 25"),
            ("reykjavik", "rare match, full scan"),
        ] {
            let call = Call::Search(SearchQuery {
                keywords: None,
                title: None,
                company: None,
                domain: None,
                location: Some(location.into()),
                limit: 25,
                cursor: None,
            });
            runtime
                .invoke(&plugin, context.clone(), call.clone())
                .result?;
            let started = Instant::now();
            let mut fuel = 0;
            for _ in 0..n_calls {
                let invocation = runtime.invoke(&plugin, context.clone(), call.clone());
                invocation.result?;
                fuel = invocation.fuel_consumed;
            }
            report(
                &format!("csv-leads {rows} rows, {what}"),
                n_calls,
                started.elapsed(),
                1,
            );
            println!("{:<46} fuel per call: {fuel}", "");
        }
    }
    Ok(())
}

/// Loading a plugin and calling it once on a fresh runtime: compiling it
/// (no cache), and after a restart with the compile cache warm.
fn first_call_after_restart() -> anyhow::Result<()> {
    let wasm = std::fs::read(artifacts::path("csv-leads").expect("built by host/build.rs"))?;
    let cache = tempfile::tempdir()?;
    let call = Call::Search(SearchQuery {
        keywords: None,
        title: None,
        company: None,
        domain: None,
        location: None,
        limit: 1,
        cursor: None,
    });
    for (mode, cache_dir) in [
        ("first call, cold: compile", None),
        ("first call, fills the cache", Some(cache.path().to_owned())),
        (
            "first call after restart, warm cache",
            Some(cache.path().to_owned()),
        ),
    ] {
        let started = Instant::now();
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir,
            ..RuntimeConfig::default()
        })?;
        let plugin = runtime.load(
            "csv-leads",
            "0.1.0",
            PluginKind::LeadSource,
            &wasm,
            Limits::DEFAULT,
        )?;
        // The store is empty: the call fails fast with "no CSV file", which
        // is a whole call all the same.
        let _ = runtime.invoke(&plugin, CallContext::new("bench"), call.clone());
        report(mode, 1, started.elapsed(), 1);
    }
    Ok(())
}

fn report(mode: &str, n: usize, elapsed: Duration, threads: usize) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{mode:<46} {n:>6} {seconds:>9.3} {:>9.0} {:>9.2}",
        n as f64 / seconds,
        seconds * 1e6 * threads as f64 / n as f64
    );
}

/// The same export called the cheapest way wasmtime allows: one instance,
/// reused for every call, with no per-call setup. The floor Tollgate's
/// fresh-instance calls are measured against.
mod raw {
    use std::time::{Duration, Instant};

    use tollgate::runtime::v0_1::{host, pricing, pricing_rule, types};
    use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    impl types::Host for State {}
    impl pricing::Host for State {}
    impl host::Host for State {
        fn log(&mut self, _: host::LogLevel, _: String) -> wasmtime::Result<()> {
            Ok(())
        }
        fn http_send(
            &mut self,
            _: host::HttpRequest,
        ) -> wasmtime::Result<Result<host::HttpResponse, host::HttpError>> {
            Ok(Err(host::HttpError::Timeout))
        }
        fn kv_get(&mut self, _: String) -> wasmtime::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn kv_set(&mut self, _: String, _: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
            Ok(Ok(()))
        }
        fn kv_delete(&mut self, _: String) -> wasmtime::Result<()> {
            Ok(())
        }
        fn setting(&mut self, _: String) -> wasmtime::Result<Option<String>> {
            Ok(None)
        }
        fn now_ms(&mut self) -> wasmtime::Result<u64> {
            Ok(0)
        }
    }

    fn plain(error: wasmtime::Error) -> anyhow::Error {
        anyhow::anyhow!("{error:#}")
    }

    pub fn reused_instance(wasm: &[u8], n_calls: usize, limits: bool) -> anyhow::Result<Duration> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(limits)
            .epoch_interruption(limits);
        let engine = Engine::new(&config).map_err(plain)?;
        let component = Component::from_binary(&engine, wasm).map_err(plain)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(plain)?;
        pricing_rule::PricingRule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(plain)?;
        let state = State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&engine, state);
        if limits {
            store.set_fuel(u64::MAX / 2).map_err(plain)?;
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let rule = pricing_rule::PricingRule::instantiate(&mut store, &component, &linker)
            .map_err(plain)?;
        let request = pricing::PriceRequest {
            plan: None,
            plugin: "x".into(),
            function: "y".into(),
            units: 1,
            period_units: 0,
            base_price_micros: 7,
        };
        let started = Instant::now();
        for _ in 0..n_calls {
            rule.call_adjust_price(&mut store, &request)
                .map_err(plain)?
                .map_err(|error| anyhow::anyhow!("{}", error.message))?;
        }
        Ok(started.elapsed())
    }
}
