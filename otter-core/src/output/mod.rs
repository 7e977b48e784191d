//! Output on its way to the event log, whoever produced it: a child's pipes (vibe, `setup.sh`,
//! a command), the engine's build stream of a runtime image, a container's log.
//!
//! * [`lines`]: the one line splitter: bytes in, complete lines out, lossily decoded per line,
//!   over-long lines cut.
//! * [`batch`]: the one event batcher: items in, encoded and stored in batches, in order, with
//!   the writer never holding up whoever produces them.
//!
//! Which stream a line belongs to is named by [`crate::model::OutputStream`].

pub mod batch;
pub mod lines;

pub use batch::{BatchPolicy, Batched, Encode, Inbox, Item, Plain, Store};
pub use lines::{LineSplitter, MAX_LINE_BYTES};
