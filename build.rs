//! With feature `gen-header`, generates the C header with cbindgen from
//! `src/ffi.rs` alone (the one module in the C ABI, so no other module needs
//! a `cbindgen:ignore` marker, which rustdoc would print) and checks
//! it against the committed `include/mooncake_shm.h`: the build fails when the
//! committed header is stale, unless `MCSHM_UPDATE_HEADER=1` asks to rewrite it
//! (`scripts/gen-header.sh`). Without the feature this script does nothing, so
//! a plain or C++-driven build never compiles cbindgen.
//!
//! With feature `bench-baseline`, compiles the C++ baseline model
//! (`cpp/baseline/*.cpp`) and its C shim (`benches/baseline_shim.cpp`) with
//! `cc` into a static library linked into the crate, for the Criterion
//! benches. Without the feature no C++ compiler is needed or invoked.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "gen-header")]
    header::check_or_update();
    #[cfg(feature = "bench-baseline")]
    baseline::compile();
}

#[cfg(feature = "bench-baseline")]
mod baseline {
    use std::path::PathBuf;

    const SOURCES: [&str; 4] = [
        "cpp/baseline/shm_registry.cpp",
        "cpp/baseline/shm_allocator.cpp",
        "cpp/baseline/relocator.cpp",
        "benches/baseline_shim.cpp",
    ];
    const HEADERS: [&str; 3] = [
        "cpp/baseline/include/mcshm_baseline/relocator.h",
        "cpp/baseline/include/mcshm_baseline/shm_allocator.h",
        "cpp/baseline/include/mcshm_baseline/shm_registry.h",
    ];

    pub fn compile() {
        let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
        for f in SOURCES.iter().chain(HEADERS.iter()) {
            println!("cargo:rerun-if-changed={}", root.join(f).display());
        }
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .include(root.join("cpp/baseline/include"))
            .files(SOURCES.iter().map(|f| root.join(f)))
            .warnings(true)
            .compile("mcshm_baseline_shim");
        // shm_open/shm_unlink (glibc < 2.34 keeps them in librt) and threads.
        println!("cargo:rustc-link-lib=rt");
        println!("cargo:rustc-link-lib=pthread");
    }
}

#[cfg(feature = "gen-header")]
mod header {
    use std::path::PathBuf;

    pub fn check_or_update() {
        let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
        for input in ["src", "cbindgen.toml"] {
            println!("cargo:rerun-if-changed={}", root.join(input).display());
        }
        println!("cargo:rerun-if-env-changed=MCSHM_UPDATE_HEADER");
        let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
            .expect("cbindgen.toml is readable and valid");
        let mut generated = Vec::new();
        cbindgen::Builder::new()
            .with_src(root.join("src").join("ffi.rs"))
            .with_config(config)
            .generate()
            .expect("cbindgen can parse the crate")
            .write(&mut generated);
        let committed_path = root.join("include").join("mooncake_shm.h");
        let committed = std::fs::read(&committed_path).unwrap_or_default();
        if committed == generated {
            return;
        }
        if std::env::var_os("MCSHM_UPDATE_HEADER").is_some_and(|v| v == "1") {
            std::fs::write(&committed_path, &generated).expect("include/ is writable");
        } else {
            panic!(
                "include/mooncake_shm.h is stale: run scripts/gen-header.sh and commit the result"
            );
        }
    }
}
