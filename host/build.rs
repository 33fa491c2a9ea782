//! Builds the plugins in `../plugins` (first-party plugins and test
//! fixtures) to `wasm32-wasip2` components, and tells the host where they
//! are. Each plugin is built on its own, because the SDK's kind features
//! must not unify across plugins. Cargo's own caching makes this a no-op
//! when nothing changed.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ is in the workspace root");
    let plugins_dir = root.join("plugins");
    println!("cargo:rerun-if-changed={}", plugins_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("plugin-sdk").display()
    );
    // Migrations are embedded into the host binary.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("migrations").display()
    );
    // The plugins build into a target dir of their own inside ours, so the
    // outer cargo's lock on its target dir does not block the inner one.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => root.join("target").join("plugins"),
    };
    let mut names: Vec<String> = std::fs::read_dir(&plugins_dir)
        .expect("reading plugins/")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut generated = String::from(
        "/// Each plugin in `plugins/`, by crate name, with its built component.\n\
         pub const PLUGIN_ARTIFACTS: &[(&str, &str)] = &[\n",
    );
    for name in &names {
        build(&plugins_dir, &target_dir, name);
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "building plugin {name} produced no {}",
            wasm.display()
        );
        generated.push_str(&format!(
            "    ({name:?}, {:?}),\n",
            wasm.display().to_string()
        ));
    }
    generated.push_str("];\n");
    // The first-party plugins (not the test fixtures) ship inside the binary,
    // manifest and component, and are installed on first start.
    generated.push_str(
        "/// The first-party plugins: name, manifest and component.\n\
         pub const FIRST_PARTY: &[(&str, &str, &[u8])] = &[\n",
    );
    for name in names.iter().filter(|name| !name.starts_with("fixture-")) {
        let manifest = plugins_dir.join(name).join("plugin.toml");
        assert!(manifest.is_file(), "plugin {name} has no plugin.toml");
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        generated.push_str(&format!(
            "    ({name:?}, include_str!({:?}), include_bytes!({:?})),\n",
            manifest.display().to_string(),
            wasm.display().to_string()
        ));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("plugin_artifacts.rs"), generated)
        .expect("writing plugin_artifacts.rs");
}

fn build(plugins_dir: &Path, target_dir: &Path, name: &str) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(plugins_dir)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            TARGET,
            "-p",
            name,
            "--target-dir",
        ])
        .arg(target_dir)
        // Settings meant for the host's build must not leak into the plugins'.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("running cargo to build plugins");
    assert!(
        status.success(),
        "building plugin {name} for {TARGET} failed; is the target installed? (rustup target add {TARGET})"
    );
}
