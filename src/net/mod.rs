//! TCP below the protocols: the acceptor every listening port uses (the API port now, the
//! replication port later) and the connections it hands out.
//!
//! - [`Stream`]: an accepted socket registered with may's event loop, read and written without
//!   blocking; a coroutine that finds nothing to do parks on it with [`Link::wait`].
//! - [`Connections`]: every open connection of the process. It owns the one plain thread that
//!   wakes connections whose deadline has passed (idle timeouts, request deadlines, waits), and
//!   the stop signal that wakes them all at shutdown. Parked connections cost no CPU: nothing
//!   polls them.
//! - [`Link`]: one connection's stream with its deadline and its share of the stop signal.
//! - [`spawn_acceptor`]: the accept loop: the connection limit (over it, the protocol's refusal is
//!   written and the connection closed), backoff on accept errors with at most one log line a
//!   second, and at shutdown the connections already queued are taken and served before the
//!   listener closes. [`provide_descriptors`] raises the soft open-file limit to what the
//!   connection limit needs, as far as the hard limit allows.
//!
//! - [`run_on_workers`]: many parked coroutines woken from a plain thread with one spawn per
//!   worker, not one eventfd write each.
//!
//! A protocol provides a closure that serves one [`Link`] on its own coroutine.

mod acceptor;
mod connections;
mod on_workers;
mod stream;
pub mod tls;

pub use acceptor::{provide_descriptors, spawn_acceptor, AcceptOptions};
pub use connections::{Connections, Detached, Link};
pub use on_workers::run_on_workers;
pub use stream::Stream;
