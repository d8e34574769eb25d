//! One module per subcommand.
pub mod bench;
pub mod compare;
pub(crate) mod console;
pub mod eval;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod sandbox;
pub mod scenario;
pub mod serve;
pub mod taxonomy;
pub mod train;
pub mod validate;
