//! A worker: its process ([`process`]), its private channel ([`channel`]),
//! the protocol spoken on it ([`protocol`]) and the request heads sent on
//! it ([`head`]). The Python side is the `corral_worker` package under
//! `python/`, compiled into the binary ([`script`]).

pub mod channel;
pub mod head;
pub mod output;
pub mod pidfd;
pub mod probe;
pub mod process;
pub mod protocol;
pub mod ring;
pub mod script;
pub mod stacks;
