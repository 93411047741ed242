//! Limits that both the configuration and the worker protocol stand on:
//! `config` checks `ws_max_message` against them, `worker::protocol`
//! enforces them on the wire. Kept here, below `config`, so that config
//! does not import the worker side; this module imports nothing of corral's.

/// Largest WebSocket message either way (uvicorn's default too).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
