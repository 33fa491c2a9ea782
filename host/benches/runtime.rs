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
