//! A worker: its process ([`process`]), its private channel ([`channel`]) and
//! the protocol spoken on it ([`protocol`]). The Python side is
//! `corral_worker.py`, compiled into the binary.

pub mod channel;
pub mod head;
pub mod output;
pub mod pidfd;
pub mod probe;
pub mod process;
pub mod protocol;
pub mod stacks;
