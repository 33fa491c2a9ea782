//! Plugin invocations per second: a fresh sandboxed instance per call, as
//! Tollgate runs every call, for a no-op export and for a real plugin.
//!
//! Run: `cargo bench -p tollgate --bench runtime` (`BENCH_QUICK=1` for a
//! short run).

use std::time::{Duration, Instant};

use tollgate::runtime::{
    Call, CallContext, Limits, PluginKind, PriceRequest, Runtime, RuntimeConfig, artifacts,
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
    println!("mode                                   calls   seconds   calls/s   us/call");
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

fn report(mode: &str, n: usize, elapsed: Duration, threads: usize) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{mode:<38} {n:>6} {seconds:>9.3} {:>9.0} {:>9.2}",
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
