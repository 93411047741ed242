//! The end-to-end suite as one test binary: each module was once its own
//! `tests/<name>.rs` crate and still covers one feature, running the real
//! `corral` binary with real Python workers over real sockets. One binary
//! links the harness (`tests/common/`) once and lets the test threads mix
//! tests of every feature instead of running 40-odd binaries one after
//! another.
//!
//! Nothing here changes process-wide state of the test process (no
//! `set_var`, no umask, no signal handler, no rlimit outside a child's
//! `pre_exec`): tests only start children and signal them by pid, so they
//! can share one process. `tests/packaging.rs`, which builds a wheel with
//! maturin (a long, CPU-bound build of the whole crate), runs apart.
//!
//! Run one feature with `cargo test --test e2e websocket::`.

#[path = "../common/mod.rs"]
mod common;

mod apm;
mod asgi;
mod behind_nginx;
mod blacksheep;
mod boot_isolation;
mod bottle;
mod canary;
mod channels;
mod claims;
mod config_cli;
mod control;
mod deploy;
mod dev_reload;
mod django_asgi;
mod dropin_env;
mod environment;
mod falcon;
mod faults;
mod files;
mod frameworks;
mod frameworks_asgi;
mod gevent;
mod gunicorn_compat;
mod gunicorn_deploys;
mod gunicorn_hooks;
mod hangup;
mod health;
mod hooks;
mod hostile_app;
mod hostile_client;
mod hostile_worker;
mod http2;
mod imports;
mod kubernetes;
mod litestar;
mod logging;
mod mutated_requests;
mod observability;
mod pid1;
mod privileges;
mod process_group;
mod proxy_protocol;
mod pythons;
mod quart;
mod recycling;
mod reexec;
mod reload;
mod request_target;
mod sanic;
mod shared_memory;
mod shutdown_delay;
mod signals;
mod socket_activation;
mod statsd;
mod status_page;
mod streaming;
mod systemd_notify;
mod systemd_units;
mod tls;
mod uvicorn_deploys;
mod websocket;
mod workers;
mod wsgi_conformance;
