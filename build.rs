//! corral runs on Linux only: it uses `prctl`, `/proc`, pidfds and
//! systemd's protocols. Built for another system, it stops here with one
//! message rather than a wall of errors from the code.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        eprintln!(
            "corral runs on Linux only (it uses prctl, /proc and pidfds); \
             this build targets {os:?}. Build it on Linux, or in a Linux \
             container (docker run -v $PWD:/src -w /src rust cargo build --release)."
        );
        std::process::exit(1);
    }
}
